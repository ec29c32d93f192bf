//! Where things are: the only part of the model that differs between targets.
//!
//! Kubernetes: every process has its own pod IP, so ports are fixed and hosts are DNS names.
//! Local: everything is on 127.0.0.1, so hosts are fixed and ports are allocated.

use crate::registry as reg;
use std::path::PathBuf;

use mxstack_spec::{Config, MediaBackend};

use crate::workers::SynapseProcess;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for HostPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// The files a Synapse process reads, by absolute path in its filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynapsePaths {
    pub config_dir: PathBuf,
    pub worker_config_dir: PathBuf,
    pub synapse_secrets_dir: PathBuf,
    pub redis_password_file: PathBuf,
    pub turn_secret_file: PathBuf,
    /// The key vault's store API key, read by the escrow module (feature `li`; main only).
    pub key_vault_store_api_key_file: PathBuf,
    pub media_store: PathBuf,
}

impl SynapsePaths {
    pub fn under(root: &str) -> SynapsePaths {
        let r = PathBuf::from(root);
        SynapsePaths {
            config_dir: r.join("config"),
            worker_config_dir: r.join("workers"),
            synapse_secrets_dir: r.join("secrets/synapse"),
            redis_password_file: r.join("secrets/redis/password"),
            turn_secret_file: r.join("secrets/turn/shared_secret"),
            key_vault_store_api_key_file: r.join("secrets/key-vault/store_api_key"),
            media_store: r.join("data/media"),
        }
    }
    pub fn homeserver_yaml(&self) -> PathBuf {
        self.config_dir.join("homeserver.yaml")
    }
    pub fn log_yaml(&self) -> PathBuf {
        self.config_dir.join("log.yaml")
    }
    pub fn worker_yaml(&self, process: &str) -> PathBuf {
        self.worker_config_dir.join(format!("{process}.yaml"))
    }
    pub fn secret(&self, file: &str) -> PathBuf {
        self.synapse_secrets_dir.join(file)
    }
}

/// Files in the synapse-secrets Secret / directory, with the secret each holds.
pub const SYNAPSE_SECRET_FILES: [(&str, mxstack_spec::SecretName); 5] = [
    ("signing.key", mxstack_spec::SecretName::SigningKey),
    (
        "macaroon_secret_key",
        mxstack_spec::SecretName::MacaroonSecretKey,
    ),
    ("form_secret", mxstack_spec::SecretName::FormSecret),
    (
        "registration_shared_secret",
        mxstack_spec::SecretName::RegistrationSharedSecret,
    ),
    (
        "worker_replication_secret",
        mxstack_spec::SecretName::WorkerReplicationSecret,
    ),
];

pub trait Addressing {
    /// Addresses Synapse listeners bind to.
    fn bind_addresses(&self) -> Vec<String>;
    /// The client/federation HTTP listener of a process.
    fn http(&self, p: &SynapseProcess) -> HostPort;
    /// The HTTP replication listener of a process (instance_map).
    fn replication(&self, p: &SynapseProcess) -> HostPort;
    fn metrics(&self, p: &SynapseProcess) -> HostPort;
    /// The stable Valkey/Redis master endpoint (HAProxy with a role:master check).
    fn redis_master(&self) -> HostPort;
    /// One Valkey instance (0 is the initial master).
    fn redis_instance(&self, i: u32) -> HostPort;
    fn sentinel(&self, i: u32) -> HostPort;
    /// The read-write PostgreSQL endpoint.
    fn postgres(&self) -> HostPort;
    fn s3_endpoint(&self) -> String;
    /// The HAProxy router's HTTP frontend.
    fn router(&self) -> HostPort;
    /// The router's stats page, Prometheus metrics and health check.
    fn router_stats(&self) -> HostPort;
    /// The content scanner's HTTP listener (media downloads, the MCS API, upload scans, metrics).
    fn content_scanner(&self) -> HostPort;
    /// clamd's TCP socket.
    fn clamd(&self) -> HostPort;
    /// The LI PostgreSQL (the replica li-sync keeps), read-write endpoint.
    fn li_postgres(&self) -> HostPort;
    /// li-sync's HTTP listener (status, /metrics, /health).
    fn li_sync(&self) -> HostPort;
    /// The key vault's HTTP listener (feature `li`): Synapse's escrow module stores keys there.
    fn key_vault(&self) -> HostPort;
    /// The LI console's HTTP listener (feature `li`): investigators' browsers, behind the LI gate.
    fn li_console(&self) -> HostPort;
    fn synapse_paths(&self) -> SynapsePaths;
    /// The URL clients use (Synapse's `public_baseurl`).
    fn public_base_url(&self, config: &Config) -> String {
        format!("https://{}/", config.hostnames().matrix)
    }
}

/// Names used in Kubernetes; also the Service names the NetworkPolicies and HAProxy refer to.
pub struct KubernetesAddressing {
    pub namespace: String,
    pub s3_endpoint: String,
}

impl KubernetesAddressing {
    pub fn new(config: &Config) -> Self {
        let ns = config.namespace.clone();
        let s3_endpoint = match config.media.backend {
            MediaBackend::Seaweedfs => {
                format!(
                    "http://{}.{ns}.svc.cluster.local:{}",
                    reg::seaweedfs::S3_SERVICE,
                    reg::seaweedfs::S3.number
                )
            }
            MediaBackend::MinioLegacy => format!("http://minio.{ns}.svc.cluster.local:80"),
            MediaBackend::S3 => config.media.endpoint.clone().unwrap_or_default(),
        };
        KubernetesAddressing {
            namespace: ns,
            s3_endpoint,
        }
    }

    fn svc(&self, name: &str) -> String {
        format!("{name}.{}.svc.cluster.local", self.namespace)
    }

    /// Pod DNS name through the group's headless Service.
    /// Main is reached through its own Service (its single pod is `synapse-main-0`).
    pub fn pod_host(&self, p: &SynapseProcess) -> String {
        if p.is_main() {
            return self.svc("synapse-main");
        }
        format!(
            "{}.{}",
            p.name,
            self.svc(&reg::synapse::group_service(&p.group))
        )
    }
}

impl Addressing for KubernetesAddressing {
    fn bind_addresses(&self) -> Vec<String> {
        vec!["0.0.0.0".into()]
    }
    fn http(&self, p: &SynapseProcess) -> HostPort {
        HostPort {
            host: self.pod_host(p),
            port: reg::synapse::HTTP.number,
        }
    }
    fn replication(&self, p: &SynapseProcess) -> HostPort {
        HostPort {
            host: self.pod_host(p),
            port: reg::synapse::REPLICATION.number,
        }
    }
    fn metrics(&self, p: &SynapseProcess) -> HostPort {
        HostPort {
            host: self.pod_host(p),
            port: reg::synapse::METRICS.number,
        }
    }
    fn redis_master(&self) -> HostPort {
        HostPort {
            host: self.svc(reg::valkey_master::COMPONENT.name()),
            port: reg::valkey::REDIS.number,
        }
    }
    fn redis_instance(&self, i: u32) -> HostPort {
        HostPort {
            host: format!(
                "{}-{i}.{}",
                reg::valkey::COMPONENT.name(),
                self.svc(reg::valkey::HEADLESS)
            ),
            port: reg::valkey::REDIS.number,
        }
    }
    fn sentinel(&self, i: u32) -> HostPort {
        HostPort {
            host: format!(
                "{}-{i}.{}",
                reg::valkey::COMPONENT.name(),
                self.svc(reg::valkey::HEADLESS)
            ),
            port: reg::valkey::SENTINEL.number,
        }
    }
    fn postgres(&self) -> HostPort {
        HostPort {
            host: self.svc(&format!("{}-rw", reg::postgres::CLUSTER)),
            port: reg::cnpg::POSTGRES.number,
        }
    }
    fn s3_endpoint(&self) -> String {
        self.s3_endpoint.clone()
    }
    fn router(&self) -> HostPort {
        HostPort {
            host: self.svc(reg::router::COMPONENT.name()),
            port: reg::router::HTTP.number,
        }
    }
    fn router_stats(&self) -> HostPort {
        HostPort {
            host: self.svc(reg::router::COMPONENT.name()),
            port: reg::router::STATS.number,
        }
    }
    fn content_scanner(&self) -> HostPort {
        HostPort {
            host: self.svc(reg::content_scanner::COMPONENT.name()),
            port: reg::content_scanner::HTTP.number,
        }
    }
    fn clamd(&self) -> HostPort {
        HostPort {
            host: self.svc(reg::clamav::COMPONENT.name()),
            port: reg::clamav::CLAMD.number,
        }
    }
    fn li_postgres(&self) -> HostPort {
        HostPort {
            host: self.svc(&format!("{}-rw", reg::li_postgres::CLUSTER)),
            port: reg::cnpg::POSTGRES.number,
        }
    }
    fn li_sync(&self) -> HostPort {
        HostPort {
            host: self.svc(reg::li_sync::COMPONENT.name()),
            port: reg::li_sync::HTTP.number,
        }
    }
    fn key_vault(&self) -> HostPort {
        HostPort {
            host: self.svc(reg::key_vault::COMPONENT.name()),
            port: reg::key_vault::HTTP.number,
        }
    }
    fn li_console(&self) -> HostPort {
        HostPort {
            host: self.svc(reg::li_console::COMPONENT.name()),
            port: reg::li_console::HTTP.number,
        }
    }
    fn synapse_paths(&self) -> SynapsePaths {
        SynapsePaths::under("/mxstack")
    }
}

/// Everything on 127.0.0.1: each process gets its own block of ports above `base_port`.
pub struct LocalAddressing {
    pub base_port: u16,
    pub state_dir: PathBuf,
    /// Process names in a fixed order: a process's index decides its ports.
    pub process_order: Vec<String>,
}

impl LocalAddressing {
    fn index(&self, p: &SynapseProcess) -> u16 {
        self.process_order
            .iter()
            .position(|n| n == &p.name)
            .expect("process is in the topology") as u16
    }
    /// Ports 0..19 above the base are infrastructure; each Synapse process then takes 3.
    fn synapse_port(&self, p: &SynapseProcess, slot: u16) -> HostPort {
        HostPort {
            host: "127.0.0.1".into(),
            port: self.base_port + 20 + self.index(p) * 3 + slot,
        }
    }
    fn infra(&self, slot: u16) -> HostPort {
        HostPort {
            host: "127.0.0.1".into(),
            port: self.base_port + slot,
        }
    }
}

impl LocalAddressing {
    /// Synapse LI's one HTTP listener (feature `li`): the first port after the Synapse
    /// processes' ports.
    pub fn synapse_li_http(&self) -> HostPort {
        HostPort {
            host: "127.0.0.1".into(),
            port: self.base_port + 20 + self.process_order.len() as u16 * 3,
        }
    }

    /// The key vault: infrastructure slots 0..19 are all taken, so the port after Synapse LI's.
    pub fn key_vault_http(&self) -> HostPort {
        HostPort {
            host: "127.0.0.1".into(),
            port: self.synapse_li_http().port + 1,
        }
    }

    /// The LI console: the port after the key vault's.
    pub fn li_console_http(&self) -> HostPort {
        HostPort {
            host: "127.0.0.1".into(),
            port: self.key_vault_http().port + 1,
        }
    }

    /// The LI console's metrics listener: the port after the console's.
    pub fn li_console_metrics(&self) -> HostPort {
        HostPort {
            host: "127.0.0.1".into(),
            port: self.li_console_http().port + 1,
        }
    }

    /// Every port the stack may listen on: the block from the base port to the LI console's
    /// metrics port (the last one allocated), and SeaweedFS's gRPC ports. `up` checks them all
    /// before it starts anything.
    pub fn ports(&self) -> Vec<u16> {
        let (master, volume, filer) = self.seaweedfs_ports();
        let mut ports: Vec<u16> = (self.base_port..=self.li_console_metrics().port).collect();
        ports.extend([master + 10000, volume + 10000, filer + 10000]);
        ports
    }

    /// SeaweedFS master, volume and filer ports (each also uses port + 10000 for gRPC).
    pub fn seaweedfs_ports(&self) -> (u16, u16, u16) {
        (
            self.base_port + 13,
            self.base_port + 14,
            self.base_port + 15,
        )
    }
}

impl Addressing for LocalAddressing {
    fn bind_addresses(&self) -> Vec<String> {
        vec!["127.0.0.1".into()]
    }
    fn http(&self, p: &SynapseProcess) -> HostPort {
        self.synapse_port(p, 0)
    }
    fn replication(&self, p: &SynapseProcess) -> HostPort {
        self.synapse_port(p, 1)
    }
    fn metrics(&self, p: &SynapseProcess) -> HostPort {
        self.synapse_port(p, 2)
    }
    fn router(&self) -> HostPort {
        self.infra(0)
    }
    fn router_stats(&self) -> HostPort {
        self.infra(1)
    }
    fn content_scanner(&self) -> HostPort {
        self.infra(16)
    }
    fn clamd(&self) -> HostPort {
        self.infra(17)
    }
    fn li_postgres(&self) -> HostPort {
        self.infra(18)
    }
    fn li_sync(&self) -> HostPort {
        self.infra(19)
    }
    fn key_vault(&self) -> HostPort {
        self.key_vault_http()
    }
    fn li_console(&self) -> HostPort {
        self.li_console_http()
    }
    fn postgres(&self) -> HostPort {
        self.infra(2)
    }
    fn redis_master(&self) -> HostPort {
        self.infra(3)
    }
    fn redis_instance(&self, i: u32) -> HostPort {
        self.infra(4 + i as u16)
    }
    fn sentinel(&self, i: u32) -> HostPort {
        self.infra(8 + i as u16)
    }
    fn s3_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.base_port + 12)
    }
    fn public_base_url(&self, _config: &Config) -> String {
        format!("http://127.0.0.1:{}/", self.router().port)
    }
    fn synapse_paths(&self) -> SynapsePaths {
        SynapsePaths::under(&self.state_dir.display().to_string())
    }
}
