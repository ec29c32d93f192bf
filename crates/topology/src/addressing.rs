//! Where things are: the only part of the model that differs between targets. The targets
//! implement [`Addressing`]: Kubernetes (`mxstack_k8s::KubernetesAddressing`: every process has
//! its own pod IP, so ports are the registry's and hosts are DNS names) and the local stack
//! (`mxstack_local::LocalAddressing`: everything on 127.0.0.1, so hosts are fixed and ports are
//! allocated).

use std::path::PathBuf;

use mxstack_spec::Config;

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
    /// coturn (feature `calls`): its public address, listeners and relay ports.
    fn turn(&self, config: &Config) -> crate::coturn::Turn;
    /// The URL clients use (Synapse's `public_baseurl`).
    fn public_base_url(&self, config: &Config) -> String {
        format!("https://{}/", config.hostnames().matrix)
    }
}
