//! Every component of the deployment, declared once: its id (its party in the flows, its pods'
//! `app.kubernetes.io/name` and its Service name), the feature that brings it, how its pods are
//! selected, its named ports, where it is scraped, its health endpoints and its flows in and out. The targets loop over [`ALL`] and read the
//! constants here; a port, a Service name or a scrape path written anywhere else is a copy that
//! will drift.
//!
//! Each component is a module with its ports as constants (`registry::valkey::REDIS`) and its
//! declaration as `COMPONENT`. Adding a component: docs/ARCHITECTURE.md, "Adding a component".

use mxstack_spec::{Config, Feature, LiSyncMode, MediaBackend, SecretName};

use crate::party::{tcp, Flow, Party, Protocol, KUBERNETES_API_PORTS};
use crate::registry as reg;
use crate::Topology;

/// A named port: the container port's name (what Services and NetworkPolicies refer to) and
/// its number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Port {
    pub name: &'static str,
    pub number: u16,
    pub protocol: Protocol,
}

impl Port {
    pub const fn tcp(name: &'static str, number: u16) -> Port {
        Port {
            name,
            number,
            protocol: Protocol::Tcp,
        }
    }
}

/// Ports `first..=last` of one protocol (one port when they are equal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortSpan {
    pub protocol: Protocol,
    pub first: u16,
    pub last: u16,
}

impl PortSpan {
    pub const fn one(protocol: Protocol, port: u16) -> PortSpan {
        PortSpan {
            protocol,
            first: port,
            last: port,
        }
    }
}

/// Ports that clients anywhere reach directly, not through the edge (call media is not HTTP):
/// a LoadBalancer Service and a NetworkPolicy open to every address. `to_internet`: what the
/// component may send to addresses outside private space (None: any port).
#[derive(Debug, Clone, Copy)]
pub struct Direct {
    pub from_anywhere: fn(&Config) -> Vec<PortSpan>,
    pub to_internet: Option<&'static [PortSpan]>,
}

/// How a component's pods are selected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selector {
    /// `app.kubernetes.io/name: <id>` (our own workloads).
    Name,
    /// A CloudNativePG cluster's instances: `cnpg.io/cluster: <cluster>`.
    CnpgCluster(&'static str),
    /// A MinIO Tenant's pods: `v1.min.io/tenant: <tenant>`.
    MinioTenant(&'static str),
    /// One Synapse worker group's pods (`main` for the main process).
    SynapseGroup(&'static str),
}

/// How Prometheus finds a component's metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scrape {
    /// A ServiceMonitor on the component's Service (labelled for it), port and path.
    Service { port: Port, path: &'static str },
    /// A PodMonitor on the component's pods (no Service carries the port), port name.
    Pod { port: &'static str },
}

/// A component's HTTP health endpoints: Kubernetes' readiness and liveness probes, and what the
/// local supervisor waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    pub port: Port,
    /// Ready to take traffic (may check its dependencies, as the scanner checks clamd).
    pub ready: &'static str,
    /// Alive (never checks dependencies: a restart would not fix them).
    pub live: &'static str,
}

/// Access control in front of an LI host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Only clients in `li.allowed_cidrs`; users then log in to Synapse LI or the LI console. No
    /// basic auth: Matrix clients send their own `Authorization: Bearer` header, which a
    /// basic-auth gate would need, and the console has its own login with a second factor.
    AllowedNetworks,
    /// Clients in `li.allowed_cidrs` that also pass the basic-auth gate (the web UIs).
    AllowedNetworksAndPassword,
}

/// A public hostname a component serves through the edge.
#[derive(Debug, Clone, Copy)]
pub struct PublicSite {
    /// Short name: listener, route and certificate names.
    pub slug: &'static str,
    /// The hostname, from the config.
    pub host: fn(&Config) -> String,
    /// Path prefixes routed to the component (none: the host only gets its certificate).
    pub paths: &'static [&'static str],
    pub port: Port,
    /// LI hosts: who may reach them.
    pub gate: Option<Gate>,
    /// Its place among the edge's sites: listeners, certificates and routes come in this order.
    pub order: u8,
}

/// The flows a component takes part in, given the deployment.
pub type Flows = fn(&Topology) -> Vec<Flow>;

fn no_flows(_: &Topology) -> Vec<Flow> {
    Vec::new()
}

/// One component.
#[derive(Debug, Clone, Copy)]
pub struct Component {
    pub id: Party,
    /// The feature that brings it (None: always there).
    pub feature: Option<Feature>,
    pub selector: Selector,
    pub ports: &'static [Port],
    pub scrape: Option<Scrape>,
    pub health: Option<Health>,
    /// Who talks to it and to whom it talks (NetworkPolicies and docs/NETWORK.md come from
    /// these, collected by `flows::flows`).
    pub flows: Flows,
    /// Its public hostnames (the edge's Gateway listeners or Ingresses, certificates, LI gates).
    pub sites: &'static [PublicSite],
    /// Every generated secret its processes may read, and no other (least privilege; the k8s
    /// tests hold every pod to it).
    pub reads: &'static [SecretName],
    /// Of those, the secrets it accepts the retiring value of too (`previous.<name>` while
    /// `mxstack rotate` replaces it): it holds both, so its readers may switch in any order.
    pub accepts_previous: &'static [SecretName],
    /// Ports the public reaches directly (call media), if any.
    pub direct: Option<Direct>,
}

impl Component {
    /// One of our workloads, its pods labelled with its id; nothing scraped or probed yet.
    pub const fn ours(id: Party, feature: Option<Feature>, ports: &'static [Port]) -> Component {
        Component {
            id,
            feature,
            selector: Selector::Name,
            ports,
            scrape: None,
            health: None,
            flows: no_flows,
            sites: &[],
            reads: &[],
            accepts_previous: &[],
            direct: None,
        }
    }

    /// Reached directly by clients anywhere on `direct.from_anywhere`.
    pub const fn direct(self, direct: Direct) -> Component {
        Component {
            direct: Some(direct),
            ..self
        }
    }

    /// The secrets it reads.
    pub const fn reads(self, reads: &'static [SecretName]) -> Component {
        Component { reads, ..self }
    }

    /// The secrets (among those it reads) whose retiring value it accepts as well.
    pub const fn accepts_previous(self, accepts_previous: &'static [SecretName]) -> Component {
        Component {
            accepts_previous,
            ..self
        }
    }

    /// Its public hostnames.
    pub const fn serves(self, sites: &'static [PublicSite]) -> Component {
        Component { sites, ..self }
    }

    /// Its flows in and out.
    pub const fn with_flows(self, flows: Flows) -> Component {
        Component { flows, ..self }
    }

    /// Pods selected otherwise than by the id (an operator's labels, a worker group).
    pub const fn selected_by(self, selector: Selector) -> Component {
        Component { selector, ..self }
    }

    /// Scraped through its Service: a ServiceMonitor on `port` at `path`.
    pub const fn scraped(self, port: Port, path: &'static str) -> Component {
        Component {
            scrape: Some(Scrape::Service { port, path }),
            ..self
        }
    }

    /// Scraped from its pods' port `port` (a PodMonitor).
    pub const fn pod_scraped(self, port: &'static str) -> Component {
        Component {
            scrape: Some(Scrape::Pod { port }),
            ..self
        }
    }

    /// Health on `port`: `ready` for readiness, `live` for liveness.
    pub const fn healthy(self, port: Port, ready: &'static str, live: &'static str) -> Component {
        Component {
            health: Some(Health { port, ready, live }),
            ..self
        }
    }

    /// The id as a name: Service, pod label, ServiceMonitor/PodMonitor and scrape job.
    pub const fn name(&self) -> &'static str {
        self.id.as_str()
    }
}

/// Prometheus scraping `to` on `port` (with monitoring).
fn prometheus(t: &Topology, to: Party, port: Port, why: &'static str) -> Option<Flow> {
    t.has(Feature::Monitoring)
        .then(|| tcp(Party::Monitoring, to, &[port.number], why))
}

/// The S3 endpoint of the media backend as a flow target: (party, port).
pub fn s3_target(t: &Topology) -> (Party, u16) {
    match t.config.media.backend {
        MediaBackend::Seaweedfs => (Party::Seaweedfs, reg::seaweedfs::S3.number),
        MediaBackend::MinioLegacy => (Party::Minio, reg::minio::S3.number),
        MediaBackend::S3 => (Party::Internet, 443),
    }
}

pub mod synapse {
    use super::*;
    pub const HTTP: Port = Port::tcp("http", 8008);
    pub const REPLICATION: Port = Port::tcp("replication", 9093);
    pub const METRICS: Port = Port::tcp("metrics", 9090);
    /// The Service selecting every Synapse pod's metrics port: Prometheus' `service` label of
    /// every Synapse target, on both targets.
    pub const METRICS_SERVICE: &str = "synapse-metrics";
    /// Every Synapse process's secrets (main's add the key vault's store key).
    pub const READS: [SecretName; 10] = [
        SecretName::SynapseDbPassword,
        SecretName::S3AccessKey,
        SecretName::S3SecretKey,
        SecretName::RedisPassword,
        SecretName::TurnSharedSecret,
        SecretName::SigningKey,
        SecretName::MacaroonSecretKey,
        SecretName::FormSecret,
        SecretName::RegistrationSharedSecret,
        SecretName::WorkerReplicationSecret,
    ];
    pub const COMPONENT: Component =
        Component::ours(Party::Synapse, None, &[HTTP, REPLICATION, METRICS])
            .scraped(METRICS, "/_synapse/metrics")
            .healthy(HTTP, "/health", "/health")
            .with_flows(flows)
            .reads(&READS);
    /// The Service of one worker group's pods (`synapse-main`, `synapse-synchrotron`, ...).
    pub fn group_service(group: &str) -> String {
        format!("{}-{group}", Party::Synapse.as_str())
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

    /// Its flows in and out.
    pub fn flows(t: &Topology) -> Vec<Flow> {
        let mut f = synapse_flows(t);

        if t.config.media.backend == MediaBackend::S3 {
            f.push(tcp(
                Party::Synapse,
                Party::Internet,
                &[443],
                "media objects on the external S3 endpoint",
            ));
        }
        f.extend(prometheus(t, Party::Synapse, METRICS, "Synapse metrics"));
        f
    }
}

pub mod router {
    use super::*;
    pub const HTTP: Port = Port::tcp("http", 8080);
    /// The stats page, Prometheus metrics and health check.
    pub const STATS: Port = Port::tcp("stats", 8404);
    /// The paths of the Matrix host that are public.
    pub const PUBLIC_SYNAPSE_PATHS: &[&str] = &["/_matrix", "/_synapse/client"];
    pub const SITES: &[PublicSite] = &[PublicSite {
        slug: "matrix",
        host: |c| c.hostnames().matrix,
        paths: PUBLIC_SYNAPSE_PATHS,
        port: HTTP,
        gate: None,
        order: 1,
    }];
    pub const COMPONENT: Component = Component::ours(Party::Router, None, &[HTTP, STATS])
        .scraped(STATS, "/metrics")
        .healthy(STATS, "/healthz", "/healthz")
        .with_flows(flows)
        .serves(SITES);

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

    /// Its flows in and out.
    pub fn flows(t: &Topology) -> Vec<Flow> {
        let mut f = router_flows(t);

        f.extend(prometheus(t, Party::Router, STATS, "HAProxy metrics"));
        f
    }
}

pub mod content_scanner {
    use super::*;
    /// Media downloads, the MCS API, upload scans and /metrics.
    pub const HTTP: Port = Port::tcp("http", 8090);
    pub const COMPONENT: Component =
        Component::ours(Party::ContentScanner, Some(Feature::Antivirus), &[HTTP])
            .scraped(HTTP, "/metrics")
            .healthy(HTTP, "/ready", "/health")
            .with_flows(flows)
            .reads(&[SecretName::ContentScannerRequestSecret]);

    /// The content scanner between clients and media, and clamd behind it.
    pub fn flows(t: &Topology) -> Vec<Flow> {
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
        f.extend(prometheus(
            t,
            ContentScanner,
            reg::content_scanner::HTTP,
            "content scanner metrics",
        ));
        f
    }
}

pub mod clamav {
    use super::*;
    pub const CLAMD: Port = Port::tcp("clamd", 3310);
    pub const COMPONENT: Component =
        Component::ours(Party::Clamav, Some(Feature::Antivirus), &[CLAMD]);
}

pub mod li_sync {
    use super::*;
    /// Status, /metrics and /health.
    pub const HTTP: Port = Port::tcp("http", 8091);
    pub const COMPONENT: Component = Component::ours(Party::LiSync, Some(Feature::Li), &[HTTP])
        .scraped(HTTP, "/metrics")
        .healthy(HTTP, "/health", "/health")
        .with_flows(flows)
        .reads(&[
            SecretName::LiDbPassword,
            SecretName::LiReplicationPassword,
            SecretName::LiS3AccessKey,
            SecretName::LiS3SecretKey,
        ]);

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
            LiPostgres,
            s3,
            &[s3_port],
            "the LI cluster's WAL archive and base backups (Barman Cloud plugin, LI backup identity)",
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

    /// Its flows in and out.
    pub fn flows(t: &Topology) -> Vec<Flow> {
        let mut f = li_replica_flows(t);
        f.extend(li_sync_mode_flows(t));
        f.extend(li_monitoring_flows(t));

        f
    }
}

pub mod key_vault {
    use super::*;
    pub const HTTP: Port = Port::tcp("http", 8092);
    pub const SITES: &[PublicSite] = &[PublicSite {
        slug: "keyvault",
        host: |c| c.hostnames().keyvault,
        paths: &[],
        port: HTTP,
        gate: None,
        order: 8,
    }];
    pub const COMPONENT: Component = Component::ours(Party::KeyVault, Some(Feature::Li), &[HTTP])
        .scraped(HTTP, "/metrics")
        .healthy(HTTP, "/health", "/health")
        .serves(SITES)
        .reads(&KEYS)
        // `<variable>_OTHER`: a second key per endpoint while a rotation runs.
        .accepts_previous(&KEYS);

    const KEYS: [SecretName; 2] = [
        SecretName::KeyVaultStoreApiKey,
        SecretName::KeyVaultRetrievalApiKey,
    ];
}

pub mod li_console {
    use super::*;
    pub const HTTP: Port = Port::tcp("http", 8093);
    /// Its own port, so the edge (which routes the console's whole host) never exposes it.
    pub const METRICS: Port = Port::tcp("metrics", 9094);
    pub const SITES: &[PublicSite] = &[PublicSite {
        slug: "console-li",
        host: |c| c.hostnames().li_console,
        paths: &["/"],
        port: HTTP,
        gate: Some(Gate::AllowedNetworks),
        order: 7,
    }];
    pub const COMPONENT: Component =
        Component::ours(Party::LiConsole, Some(Feature::Li), &[HTTP, METRICS])
            .scraped(METRICS, "/metrics")
            .healthy(HTTP, "/health", "/health")
            .with_flows(flows)
            .serves(SITES)
            .reads(&[
                SecretName::KeyVaultRetrievalApiKey,
                SecretName::LiConsoleDbPassword,
                SecretName::LiConsoleSigningKey,
                SecretName::KeyVaultAgeIdentity,
                SecretName::LiBrowsingS3AccessKey,
                SecretName::LiBrowsingS3SecretKey,
            ]);

    /// The key vault (Synapse main stores, the console retrieves) and the LI console.
    pub fn flows(t: &Topology) -> Vec<Flow> {
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
}

/// Both PostgreSQL clusters are CloudNativePG's: the same ports, its labels.
pub mod cnpg {
    use super::*;
    pub const POSTGRES: Port = Port::tcp("postgres", 5432);
    /// The instance manager's status endpoint.
    pub const STATUS: Port = Port::tcp("status", 8000);
    pub const METRICS: Port = Port::tcp("metrics", 9187);
    pub const PORTS: &[Port] = &[POSTGRES, STATUS, METRICS];
}

pub mod li_postgres {
    use super::*;
    pub const CLUSTER: &str = "li-pg";
    // CloudNativePG's own PodMonitor switch is deprecated; a PodMonitor is the replacement it
    // recommends.
    pub const COMPONENT: Component =
        Component::ours(Party::LiPostgres, Some(Feature::Li), cnpg::PORTS)
            .selected_by(Selector::CnpgCluster(CLUSTER))
            .pod_scraped("metrics");
}

pub mod postgres {
    use super::*;
    pub const CLUSTER: &str = "main-pg";
    pub const COMPONENT: Component = Component::ours(Party::Postgres, None, cnpg::PORTS)
        .selected_by(Selector::CnpgCluster(CLUSTER))
        .pod_scraped("metrics")
        .with_flows(flows);

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

    /// Its flows in and out.
    pub fn flows(t: &Topology) -> Vec<Flow> {
        let mut f = postgres_flows(t);

        if t.config.media.backend == MediaBackend::S3 {
            f.push(tcp(
                Party::Postgres,
                Party::Internet,
                &[443],
                "backups on the external S3 endpoint",
            ));
        }
        f.extend(prometheus(
            t,
            Party::Postgres,
            cnpg::METRICS,
            "PostgreSQL metrics",
        ));
        f
    }
}

pub mod valkey {
    use super::*;
    /// Named `valkey` in the pods (what Services and probes refer to).
    pub const REDIS: Port = Port::tcp("valkey", 6379);
    pub const SENTINEL: Port = Port::tcp("sentinel", 26379);
    /// redis_exporter's port (with monitoring).
    pub const EXPORTER: Port = Port::tcp("metrics", 9121);
    /// The headless Service that gives each instance a stable name.
    pub const HEADLESS: &str = "valkey-headless";
    pub const COMPONENT: Component =
        Component::ours(Party::Valkey, None, &[REDIS, SENTINEL, EXPORTER])
            .pod_scraped("metrics")
            .with_flows(flows)
            .reads(&[SecretName::RedisPassword]);

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

    /// Its flows in and out.
    pub fn flows(t: &Topology) -> Vec<Flow> {
        let mut f = valkey_flows(t);

        f.extend(prometheus(
            t,
            Party::Valkey,
            EXPORTER,
            "Valkey metrics exporter",
        ));
        f
    }
}

/// The stable master endpoint: HAProxy checking `role:master` (Synapse has no Sentinel support).
pub mod valkey_master {
    use super::*;
    pub const COMPONENT: Component = Component::ours(Party::ValkeyMaster, None, &[valkey::REDIS])
        .reads(&[SecretName::RedisPassword]);
}

pub mod seaweedfs {
    use super::*;
    pub const S3: Port = Port::tcp("s3", 8333);
    pub const MASTER: Port = Port::tcp("master", 9333);
    pub const MASTER_GRPC: Port = Port::tcp("master-grpc", 19333);
    pub const VOLUME: Port = Port::tcp("volume", 8080);
    pub const VOLUME_GRPC: Port = Port::tcp("volume-grpc", 18080);
    pub const FILER: Port = Port::tcp("filer", 8888);
    pub const FILER_GRPC: Port = Port::tcp("filer-grpc", 18888);
    /// The filers' Prometheus endpoint (the S3 gateway's request counts and latencies).
    pub const METRICS: Port = Port::tcp("metrics", 9327);
    /// The S3 gateway's Service.
    pub const S3_SERVICE: &str = "seaweedfs-s3";
    /// The ports SeaweedFS's servers talk to each other on.
    pub const INTERNAL: [Port; 6] = [MASTER, MASTER_GRPC, VOLUME, VOLUME_GRPC, FILER, FILER_GRPC];
    pub const COMPONENT: Component = Component::ours(
        Party::Seaweedfs,
        None,
        &[
            S3,
            MASTER,
            MASTER_GRPC,
            VOLUME,
            VOLUME_GRPC,
            FILER,
            FILER_GRPC,
            METRICS,
        ],
    )
    .pod_scraped(METRICS.name)
    .with_flows(flows)
    .reads(&S3_KEYS)
    // An identity lists several credentials (`crate::seaweedfs::credentials`).
    .accepts_previous(&S3_KEYS);

    const S3_KEYS: [SecretName; 8] = [
        SecretName::S3AccessKey,
        SecretName::S3SecretKey,
        SecretName::LiS3AccessKey,
        SecretName::LiS3SecretKey,
        SecretName::LiBrowsingS3AccessKey,
        SecretName::LiBrowsingS3SecretKey,
        SecretName::LiBackupS3AccessKey,
        SecretName::LiBackupS3SecretKey,
    ];

    /// Its flows in and out (when it is the media backend).
    pub fn flows(t: &Topology) -> Vec<Flow> {
        use Party::*;
        if t.config.media.backend != MediaBackend::Seaweedfs {
            return Vec::new();
        }
        let mut f = vec![
            tcp(Synapse, Seaweedfs, &[S3.number], "media objects (S3)"),
            tcp(
                Postgres,
                Seaweedfs,
                &[S3.number],
                "WAL archive and base backups (Barman Cloud plugin)",
            ),
            tcp(
                Seaweedfs,
                Seaweedfs,
                &INTERNAL.map(|p| p.number),
                "SeaweedFS master, volume and filer traffic",
            ),
        ];
        f.extend(prometheus(t, Seaweedfs, METRICS, "SeaweedFS S3 metrics"));
        f
    }
}

pub mod minio {
    use super::*;
    pub const S3: Port = Port::tcp("s3", 9000);
    pub const TENANT: &str = "minio";
    pub const COMPONENT: Component = Component::ours(Party::Minio, None, &[S3])
        .selected_by(Selector::MinioTenant(TENANT))
        .with_flows(flows);

    /// Its flows in and out (when it is the media backend).
    pub fn flows(t: &Topology) -> Vec<Flow> {
        use Party::*;
        if t.config.media.backend != MediaBackend::MinioLegacy {
            return Vec::new();
        }
        vec![
            tcp(Synapse, Minio, &[S3.number], "media objects (S3)"),
            tcp(
                Postgres,
                Minio,
                &[S3.number],
                "WAL archive and base backups (Barman Cloud plugin)",
            ),
            tcp(Minio, Minio, &[S3.number], "MinIO erasure-set traffic"),
        ]
    }
}

pub mod element {
    use super::*;
    pub const HTTP: Port = Port::tcp("http", 8080);
    pub const SITES: &[PublicSite] = &[
        PublicSite {
            slug: "well-known",
            host: |c| c.domain.clone(),
            paths: &["/.well-known/matrix"],
            port: HTTP,
            gate: None,
            order: 0,
        },
        PublicSite {
            slug: "element",
            host: |c| c.hostnames().element,
            paths: &["/"],
            port: HTTP,
            gate: None,
            order: 2,
        },
    ];
    pub const COMPONENT: Component = Component::ours(Party::Element, None, &[HTTP])
        .healthy(HTTP, "/healthz", "/healthz")
        .with_flows(flows)
        .serves(SITES);

    /// Its flows in and out.
    pub fn flows(_: &Topology) -> Vec<Flow> {
        vec![tcp(
            Party::Edge,
            Party::Element,
            &[reg::element::HTTP.number],
            "Element Web static files",
        )]
    }
}

pub mod coturn {
    use super::*;
    /// TURN and STUN, on UDP and TCP alike.
    pub const TURN: Port = Port::tcp("turn", 3478);
    /// TURN over TLS (`turns:`), on TCP and UDP (DTLS) alike.
    pub const TURNS: Port = Port::tcp("turns", 5349);
    pub const COMPONENT: Component =
        Component::ours(Party::Coturn, Some(Feature::Calls), &[TURN, TURNS])
            .reads(&[SecretName::TurnSharedSecret])
            .direct(Direct {
                from_anywhere,
                // Relays to peers anywhere on the internet; coturn itself refuses private peers.
                to_internet: None,
            });

    /// The relay ports from the config.
    pub fn relay(c: &Config) -> std::ops::RangeInclusive<u16> {
        c.calls.relay_port_first..=c.calls.relay_port_last
    }

    /// Its listeners on UDP and TCP, and the relay ports (UDP).
    pub fn from_anywhere(c: &Config) -> Vec<PortSpan> {
        let mut spans = Vec::new();
        for port in [TURN, TURNS] {
            spans.push(PortSpan::one(Protocol::Udp, port.number));
            spans.push(PortSpan::one(Protocol::Tcp, port.number));
        }
        spans.push(PortSpan {
            protocol: Protocol::Udp,
            first: *relay(c).start(),
            last: *relay(c).end(),
        });
        spans
    }
}

pub mod livekit {
    use super::*;
    pub const HTTP: Port = Port::tcp("http", 7880);
    /// WebRTC over TCP, when UDP is blocked.
    pub const RTC_TCP: Port = Port::tcp("rtc-tcp", 7881);
    /// All WebRTC UDP traffic multiplexed on one port (`rtc.udp_port`), which a LoadBalancer can
    /// expose, instead of a 50000-60000 range it cannot.
    pub const RTC_UDP: Port = Port {
        name: "rtc-udp",
        number: 7882,
        protocol: Protocol::Udp,
    };
    pub const SITES: &[PublicSite] = &[PublicSite {
        slug: "livekit",
        host: |c| c.hostnames().livekit,
        paths: &["/"],
        port: HTTP,
        gate: None,
        order: 3,
    }];
    pub const COMPONENT: Component = Component::ours(Party::Livekit, Some(Feature::Calls), &[HTTP])
        .with_flows(flows)
        .serves(SITES)
        // coturn's shared secret: LiveKit hands its clients coturn credentials made with it.
        .reads(&[
            SecretName::LivekitApiKey,
            SecretName::LivekitApiSecret,
            SecretName::TurnSharedSecret,
        ])
        // Its `keys` map takes several pairs (`crate::rtc_auth::livekit_keys`): tokens signed
        // with the retiring key stay valid until the rotation's second deploy.
        .accepts_previous(&[SecretName::LivekitApiKey, SecretName::LivekitApiSecret])
        .direct(Direct {
            from_anywhere: |_| {
                [RTC_TCP, RTC_UDP]
                    .map(|p| PortSpan::one(p.protocol, p.number))
                    .to_vec()
            },
            // ICE connectivity checks towards clients' UDP candidates.
            to_internet: Some(&[PortSpan {
                protocol: Protocol::Udp,
                first: 1024,
                last: 65535,
            }]),
        });

    /// Its flows in and out.
    pub fn flows(_: &Topology) -> Vec<Flow> {
        vec![tcp(
            Party::Edge,
            Party::Livekit,
            &[reg::livekit::HTTP.number],
            "LiveKit signalling (WebSocket)",
        )]
    }
}

/// The MatrixRTC authorization service (`mxstack serve rtc-auth`): our users' OpenID tokens for
/// LiveKit tokens (crates/rtc-auth).
pub mod rtc_auth {
    use super::*;
    /// The API, /healthz and /metrics (lk-jwt-service's port).
    pub const HTTP: Port = Port::tcp("http", 8080);
    /// Only the API and its health check are public; /metrics stays inside.
    pub const PUBLIC_PATHS: &[&str] = &["/sfu/get", "/get_token", "/healthz"];
    pub const SITES: &[PublicSite] = &[PublicSite {
        slug: "livekit-jwt",
        host: |c| c.hostnames().livekit_jwt,
        paths: PUBLIC_PATHS,
        port: HTTP,
        gate: None,
        order: 9,
    }];
    pub const COMPONENT: Component = Component::ours(Party::RtcAuth, Some(Feature::Calls), &[HTTP])
        .scraped(HTTP, "/metrics")
        .healthy(HTTP, "/healthz", "/healthz")
        .with_flows(flows)
        .serves(SITES)
        .reads(&[SecretName::LivekitApiKey, SecretName::LivekitApiSecret]);

    /// Element Call asks it for tokens; it asks Synapse main who a token belongs to and has
    /// LiveKit create the call's room.
    pub fn flows(t: &Topology) -> Vec<Flow> {
        use Party::*;
        let mut f = vec![
            tcp(
                Edge,
                RtcAuth,
                &[HTTP.number],
                "Element Call exchanges OpenID tokens for LiveKit tokens",
            ),
            tcp(
                RtcAuth,
                SynapseMain,
                &[reg::synapse::HTTP.number],
                "OpenID token check (federation openid/userinfo on main)",
            ),
            tcp(
                RtcAuth,
                Livekit,
                &[reg::livekit::HTTP.number],
                "LiveKit RoomService CreateRoom before a call's first token",
            ),
        ];
        f.extend(prometheus(
            t,
            RtcAuth,
            HTTP,
            "MatrixRTC authorization service metrics",
        ));
        f
    }
}

pub mod sygnal {
    use super::*;
    pub const HTTP: Port = Port::tcp("http", 5000);
    pub const COMPONENT: Component = Component::ours(Party::Sygnal, Some(Feature::Push), &[HTTP])
        .healthy(HTTP, "/health", "/health")
        .with_flows(flows);

    /// Its flows in and out.
    pub fn flows(_: &Topology) -> Vec<Flow> {
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
}

/// Synapse LI: the read-only browsing homeserver on the working copy.
pub mod synapse_li {
    use super::*;
    /// Paths of the Matrix LI host: the client API, SSO pages, and the admin API Synapse Admin LI
    /// calls (the LI host is reachable from the allowed networks only).
    pub const MATRIX_LI_PATHS: &[&str] = &["/_matrix", "/_synapse/client", "/_synapse/admin"];
    pub const SITES: &[PublicSite] = &[PublicSite {
        slug: "matrix-li",
        host: |c| c.hostnames().matrix_li,
        paths: MATRIX_LI_PATHS,
        port: synapse::HTTP,
        gate: Some(Gate::AllowedNetworks),
        order: 4,
    }];
    pub const COMPONENT: Component =
        Component::ours(Party::SynapseLi, Some(Feature::Li), &[synapse::HTTP])
            .healthy(synapse::HTTP, "/health", "/health")
            .with_flows(flows)
            .serves(SITES) // The same server as main: its signing key (and nothing else of main's secrets).
            .reads(&[
                SecretName::LiWorkingCopyDbPassword,
                SecretName::LiBrowsingS3AccessKey,
                SecretName::LiBrowsingS3SecretKey,
                SecretName::SigningKey,
            ]);

    /// The browsing stack: Synapse LI on the working copy, and its two web UIs.
    pub fn flows(t: &Topology) -> Vec<Flow> {
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
}

/// The LI web UIs (Element LI, Synapse Admin LI): nginx as a non-root user.
pub mod li_web {
    use super::*;
    pub const HTTP: Port = Port::tcp("http", 8080);
}

pub mod element_li {
    use super::*;
    pub const SITES: &[PublicSite] = &[PublicSite {
        slug: "element-li",
        host: |c| c.hostnames().element_li,
        paths: &["/"],
        port: li_web::HTTP,
        gate: Some(Gate::AllowedNetworksAndPassword),
        order: 5,
    }];
    pub const COMPONENT: Component =
        Component::ours(Party::ElementLi, Some(Feature::Li), &[li_web::HTTP])
            .healthy(li_web::HTTP, "/healthz", "/healthz")
            .serves(SITES);
}

pub mod synapse_admin_li {
    use super::*;
    pub const SITES: &[PublicSite] = &[PublicSite {
        slug: "admin-li",
        host: |c| c.hostnames().admin_li,
        paths: &["/"],
        port: li_web::HTTP,
        gate: Some(Gate::AllowedNetworksAndPassword),
        order: 6,
    }];
    pub const COMPONENT: Component =
        Component::ours(Party::SynapseAdminLi, Some(Feature::Li), &[li_web::HTTP])
            .healthy(li_web::HTTP, "/healthz", "/healthz")
            .serves(SITES);
}

/// Loki, the log store (feature `monitoring`): one single-binary instance on a volume
/// (docs/LOGS.md).
pub mod loki {
    use super::*;
    /// Push, query and /metrics.
    pub const HTTP: Port = Port::tcp("http", 3100);
    /// `/ready` waits for the ingester to join its ring; liveness asks only whether the process
    /// answers (a restart would not make the ring ready sooner).
    pub const COMPONENT: Component =
        Component::ours(Party::Loki, Some(Feature::Monitoring), &[HTTP])
            .scraped(HTTP, "/metrics")
            .healthy(HTTP, "/ready", "/loki/api/v1/status/buildinfo")
            .with_flows(flows);

    /// Alloy pushes, Grafana queries, Prometheus scrapes. Loki itself reaches nothing: its
    /// storage is its own volume.
    pub fn flows(_: &Topology) -> Vec<Flow> {
        use Party::*;
        vec![
            tcp(Alloy, Loki, &[HTTP.number], "Alloy pushes pod logs to Loki"),
            tcp(
                Monitoring,
                Loki,
                &[HTTP.number],
                "Grafana queries logs (LogQL); Prometheus scrapes Loki's metrics",
            ),
        ]
    }
}

/// Grafana Alloy (feature `monitoring`): a DaemonSet that tails the logs of the namespace's pods
/// on its node through the Kubernetes API and pushes them to Loki (docs/LOGS.md).
pub mod alloy {
    use super::*;
    /// Its UI, /metrics and health.
    pub const HTTP: Port = Port::tcp("http", 12345);
    /// `/-/healthy` fails while any pipeline component is unhealthy, which a restart does not
    /// fix: both probes ask `/-/ready`.
    pub const COMPONENT: Component =
        Component::ours(Party::Alloy, Some(Feature::Monitoring), &[HTTP])
            .pod_scraped(HTTP.name)
            .healthy(HTTP, "/-/ready", "/-/ready")
            .with_flows(flows);

    /// Its flows in and out (Alloy -> Loki is declared with Loki).
    pub fn flows(t: &Topology) -> Vec<Flow> {
        use Party::*;
        let mut f = vec![tcp(
            Alloy,
            KubernetesApi,
            &KUBERNETES_API_PORTS,
            "Alloy lists the pods on its node and tails their logs (its Role: pods and pods/log in the namespace, read only)",
        )];
        f.extend(prometheus(t, Alloy, HTTP, "Alloy metrics"));
        f
    }
}

/// Every component, in the order the targets emit them (the monitoring objects follow it).
pub const ALL: [&Component; 24] = [
    &synapse::COMPONENT,
    &router::COMPONENT,
    &content_scanner::COMPONENT,
    &li_sync::COMPONENT,
    &key_vault::COMPONENT,
    &li_console::COMPONENT,
    &li_postgres::COMPONENT,
    &postgres::COMPONENT,
    &valkey::COMPONENT,
    &valkey_master::COMPONENT,
    &seaweedfs::COMPONENT,
    &minio::COMPONENT,
    &element::COMPONENT,
    &coturn::COMPONENT,
    &livekit::COMPONENT,
    &sygnal::COMPONENT,
    &clamav::COMPONENT,
    &synapse_li::COMPONENT,
    &element_li::COMPONENT,
    &synapse_admin_li::COMPONENT,
    &SYNAPSE_MAIN,
    &rtc_auth::COMPONENT,
    &loki::COMPONENT,
    &alloy::COMPONENT,
];

/// Synapse's secrets and the key vault's store key, which main's escrow module sends.
const MAIN_READS: [SecretName; 11] = {
    let mut all = [SecretName::KeyVaultStoreApiKey; 11];
    let mut i = 0;
    while i < synapse::READS.len() {
        all[i] = synapse::READS[i];
        i += 1;
    }
    all
};

/// Synapse's main process as a party of its own (it alone serves the escrow endpoint): the
/// Synapse pods of group `main`.
pub const SYNAPSE_MAIN: Component = Component {
    id: Party::SynapseMain,
    scrape: None,
    // Its flows are declared with the flows of the parties that talk to it (the escrow store).
    flows: no_flows,
    sites: &[],
    // Main alone holds the key vault's store key: its escrow module sends it.
    reads: &MAIN_READS,
    ..synapse::COMPONENT.selected_by(Selector::SynapseGroup(crate::workers::MAIN_INSTANCE))
};

/// The declaration of an in-namespace party with long-running pods of its own (None for the
/// jobs, which have no ports, and for parties outside the namespace).
pub fn component(p: Party) -> Option<&'static Component> {
    ALL.iter().copied().find(|c| c.id == p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_port_names_unique_per_component() {
        let mut ids: Vec<&str> = ALL.iter().map(|c| c.name()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), ALL.len());
        for c in ALL {
            let mut names: Vec<&str> = c.ports.iter().map(|p| p.name).collect();
            names.sort();
            names.dedup();
            assert_eq!(names.len(), c.ports.len(), "{}", c.name());
            // Kubernetes: a port name is at most 15 characters, lowercase alphanumerics and '-'.
            for p in c.ports {
                assert!(
                    p.name.len() <= 15
                        && p.name
                            .chars()
                            .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-'),
                    "{}",
                    p.name
                );
            }
            if let Some(Scrape::Service { port, .. }) = c.scrape {
                assert!(
                    c.ports.contains(&port),
                    "{} scrapes a port it declares",
                    c.name()
                );
            }
            if let Some(h) = c.health {
                assert!(
                    c.ports.contains(&h.port),
                    "{} probes a port it declares",
                    c.name()
                );
                assert!(h.ready.starts_with('/') && h.live.starts_with('/'));
            }
            if let Some(Scrape::Pod { port }) = c.scrape {
                assert!(c.ports.iter().any(|p| p.name == port), "{}", c.name());
            }
        }
    }

    #[test]
    fn public_sites_have_unique_slugs_and_places_and_route_to_declared_ports() {
        let sites: Vec<(&Component, &PublicSite)> = ALL
            .iter()
            .flat_map(|c| c.sites.iter().map(move |s| (*c, s)))
            .collect();
        let mut slugs: Vec<&str> = sites.iter().map(|(_, s)| s.slug).collect();
        let mut order: Vec<u8> = sites.iter().map(|(_, s)| s.order).collect();
        slugs.sort();
        slugs.dedup();
        order.sort();
        order.dedup();
        assert_eq!(slugs.len(), sites.len(), "a slug twice");
        assert_eq!(order.len(), sites.len(), "two sites in one place");
        let config = Config::new("acme.test", mxstack_spec::Tier::T100, Default::default());
        for (c, s) in &sites {
            assert!(c.ports.contains(&s.port), "{}: {}", c.name(), s.slug);
            assert!((s.host)(&config).ends_with("acme.test"), "{}", s.slug);
            // Gated sites are LI's, and every LI site is gated but the key vault's bare host.
            if s.gate.is_some() {
                assert_eq!(c.feature, Some(Feature::Li), "{}", s.slug);
            }
        }
    }

    #[test]
    fn every_party_in_the_namespace_with_pods_of_its_own_is_declared() {
        use Party::*;
        for p in [
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
            LiPostgres,
            LiSync,
            SynapseLi,
            KeyVault,
            SynapseMain,
            ElementLi,
            SynapseAdminLi,
            LiConsole,
            RtcAuth,
            Loki,
            Alloy,
        ] {
            assert!(component(p).is_some(), "{p:?}");
        }
        assert!(component(valkey::COMPONENT.id)
            .unwrap()
            .ports
            .contains(&valkey::REDIS));
    }
}
