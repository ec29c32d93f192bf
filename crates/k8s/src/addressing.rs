//! Where things are in Kubernetes: every process has its own pod IP, so ports are the registry's
//! and hosts are the Services' DNS names (`<service>.<namespace>.svc.cluster.local`;
//! CloudNativePG's read-write Service is `<cluster>-rw`). Only this target knows these names.

use mxstack_spec::{Config, MediaBackend};
use mxstack_topology::coturn::{Turn, TurnTls};
use mxstack_topology::registry as reg;
use mxstack_topology::{Addressing, HostPort, SynapsePaths, SynapseProcess};

/// Where coturn's pod mounts its certificate (cert-manager's `tls-turn` Secret).
pub const TURN_CERT_DIR: &str = "/certs";

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

    pub(crate) fn svc(&self, name: &str) -> String {
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
    fn turn(&self, config: &Config) -> Turn {
        Turn {
            public: HostPort {
                host: config.hostnames().turn,
                port: reg::coturn::TURN.number,
            },
            listen_ip: None,
            tls: Some(TurnTls {
                port: reg::coturn::TURNS.number,
                cert: format!("{TURN_CERT_DIR}/tls.crt"),
                key: format!("{TURN_CERT_DIR}/tls.key"),
            }),
            relay: reg::coturn::relay(config),
            // Unset: the node's address, which Kubernetes expands from the pod's EXTERNAL_IP
            // variable (downward API `status.hostIP`).
            external_ip: config
                .calls
                .external_ip
                .map_or_else(|| "$(EXTERNAL_IP)".into(), |ip| ip.to_string()),
        }
    }
}
