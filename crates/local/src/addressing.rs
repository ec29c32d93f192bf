//! Where things are on one machine: everything on 127.0.0.1 under one state directory, so hosts
//! are fixed and ports are allocated from `--base-port`.
//!
//! Ports are handed out in the registry's order (`mxstack_topology::registry::ALL`), each
//! component taking one port per declared port and instance, after the router, which takes the
//! base port (the URL `up` prints) and the next. Monitoring's ports follow, and Synapse's
//! processes come last, in the order the stack's shape records (`crate::shape`), so that
//! adding a process moves no port. Nothing here numbers a slot by hand: a
//! component added to the registry gets its ports by being there. Ports the local stack does not
//! run (operator-side, exporters, gRPC that SeaweedFS derives itself) take none.

use std::collections::BTreeMap;
use std::path::PathBuf;

use mxstack_spec::Config;
use mxstack_topology::coturn::Turn;
use mxstack_topology::flows::Party;
use mxstack_topology::registry::{self as reg, Component, Port};
use mxstack_topology::{Addressing, HostPort, SynapsePaths, SynapseProcess};

/// One allocated port: a component's named port, of one of its instances.
type Slot = (Party, &'static str, u32);

/// Everything on 127.0.0.1: ports allocated from `base_port` in the registry's order.
pub struct LocalAddressing {
    pub base_port: u16,
    pub state_dir: PathBuf,
    /// Synapse process names in a fixed order: a process's index is its instance.
    pub process_order: Vec<String>,
    slots: BTreeMap<Slot, u16>,
}

/// Ports of a component the local stack listens on (CloudNativePG's status and metrics ports
/// and Valkey's exporter are Kubernetes sidecars; coturn has no certificate for TLS on one
/// machine). Exporters' ports come last (see `new`). SeaweedFS's gRPC ports are allocated like
/// the others and passed to it: its default, port + 10000, lands in the kernel's ephemeral
/// range (32768–60999), where an outgoing connection of anything on the machine may hold it,
/// and SeaweedFS then exits 255 at start (CI lost `test_scale`'s stack to that).
fn local_ports(c: &'static Component) -> impl Iterator<Item = &'static Port> {
    c.ports.iter().filter(move |p| {
        !((c.id == Party::Valkey && **p == reg::valkey::EXPORTER)
            || (c.id == Party::Seaweedfs && **p == reg::seaweedfs::METRICS)
            || (matches!(c.id, Party::Postgres | Party::LiPostgres) && **p != reg::cnpg::POSTGRES)
            || **p == reg::coturn::TURNS)
    })
}

/// coturn's relay ports on one machine (each relayed call leg takes one), allocated right after
/// its listener.
pub const LOCAL_RELAY_PORTS: u32 = 16;
const RELAY: &str = "relay";
/// The S3 gateway's own gRPC listener (not a registry port: nothing else connects to it).
const S3_GRPC: &str = "s3-grpc";
const PROMETHEUS: &str = "prometheus";
const ALERTMANAGER: &str = "alertmanager";

impl LocalAddressing {
    /// The MatrixRTC authorization service (feature `calls`; clients reach it directly).
    pub fn rtc_auth(&self) -> HostPort {
        self.at(Party::RtcAuth, &reg::rtc_auth::HTTP, 0)
    }

    /// `valkey_instances`: how many Valkey servers (and Sentinels) run.
    pub fn new(
        base_port: u16,
        state_dir: PathBuf,
        process_order: Vec<String>,
        valkey_instances: u32,
    ) -> LocalAddressing {
        let instances = |c: &Component| -> u32 {
            match c.id {
                Party::Synapse => process_order.len() as u32,
                Party::Valkey => valkey_instances,
                // Main's ports are those of Synapse instance 0; the LI web UIs are not run.
                Party::SynapseMain | Party::ElementLi | Party::SynapseAdminLi => 0,
                // Kubernetes-only parts: LiveKit, push and the web UIs run from their images.
                Party::Minio | Party::Element | Party::Livekit | Party::Sygnal => 0,
                // The log pipeline is Kubernetes' (locally, logs are files in state/logs).
                Party::Loki | Party::Alloy => 0,
                _ => 1,
            }
        };
        // Synapse's processes come last of all (below): `mxstack scale` adds one by appending
        // its ports, and no other component's port moves.
        let order = std::iter::once(&reg::router::COMPONENT).chain(
            reg::ALL
                .into_iter()
                .filter(|c| !matches!(c.id, Party::Router | Party::Synapse)),
        );
        let mut slots = BTreeMap::new();
        let mut next = base_port;
        for c in order {
            for i in 0..instances(c) {
                for p in local_ports(c) {
                    slots.insert((c.id, p.name, i), next);
                    next += 1;
                }
            }
            if c.id == Party::Seaweedfs && instances(c) > 0 {
                slots.insert((Party::Seaweedfs, S3_GRPC, 0), next);
                next += 1;
            }
            if c.id == Party::Coturn {
                for j in 0..LOCAL_RELAY_PORTS {
                    slots.insert((Party::Coturn, RELAY, j), next);
                    next += 1;
                }
            }
        }
        // Monitoring's ports come last, so that adding them moved no other port: Valkey's and
        // PostgreSQL's exporters (sidecars on Kubernetes), Prometheus and Alertmanager.
        let mut monitoring = |party: Party, port: &'static str, instance: u32| {
            slots.insert((party, port, instance), next);
            next += 1;
        };
        for i in 0..valkey_instances {
            monitoring(Party::Valkey, reg::valkey::EXPORTER.name, i);
        }
        monitoring(Party::Postgres, reg::cnpg::METRICS.name, 0);
        monitoring(Party::LiPostgres, reg::cnpg::METRICS.name, 0);
        monitoring(Party::Seaweedfs, reg::seaweedfs::METRICS.name, 0);
        monitoring(Party::Monitoring, PROMETHEUS, 0);
        monitoring(Party::Monitoring, ALERTMANAGER, 0);
        for i in 0..instances(&reg::synapse::COMPONENT) {
            for p in local_ports(&reg::synapse::COMPONENT) {
                slots.insert((Party::Synapse, p.name, i), next);
                next += 1;
            }
        }
        LocalAddressing {
            base_port,
            state_dir,
            process_order,
            slots,
        }
    }

    /// The local port of `party`'s port `name`, instance `instance`, if it runs here.
    pub fn port_of(&self, party: Party, name: &str, instance: u32) -> Option<u16> {
        self.slots
            .iter()
            .find(|((p, n, i), _)| *p == party && *n == name && *i == instance)
            .map(|(_, port)| *port)
    }

    /// The local Prometheus (feature `monitoring`).
    pub fn prometheus(&self) -> HostPort {
        self.at_name(Party::Monitoring, PROMETHEUS)
    }

    /// The local Alertmanager (feature `monitoring`).
    pub fn alertmanager(&self) -> HostPort {
        self.at_name(Party::Monitoring, ALERTMANAGER)
    }

    fn at_name(&self, party: Party, name: &str) -> HostPort {
        HostPort {
            host: "127.0.0.1".into(),
            port: self.port_of(party, name, 0).expect("allocated in new()"),
        }
    }

    fn at(&self, party: Party, port: &Port, instance: u32) -> HostPort {
        let port = *self
            .slots
            .get(&(party, port.name, instance))
            .unwrap_or_else(|| panic!("no local port {} of {party:?} {instance}", port.name));
        HostPort {
            host: "127.0.0.1".into(),
            port,
        }
    }

    fn synapse(&self, p: &SynapseProcess, port: &Port) -> HostPort {
        let index = self
            .process_order
            .iter()
            .position(|n| n == &p.name)
            .expect("process is in the topology") as u32;
        self.at(Party::Synapse, port, index)
    }

    /// Every port the stack may listen on: `up` checks them all before it starts anything.
    pub fn ports(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self.slots.values().copied().collect();
        ports.sort_unstable();
        ports
    }

    /// The last port of the block (the highest allocated).
    pub fn last_port(&self) -> u16 {
        self.slots.values().copied().max().unwrap_or(self.base_port)
    }

    /// Synapse LI's one HTTP listener (feature `li`).
    pub fn synapse_li_http(&self) -> HostPort {
        self.at(Party::SynapseLi, &reg::synapse::HTTP, 0)
    }

    /// The LI console's metrics listener.
    pub fn li_console_metrics(&self) -> HostPort {
        self.at(Party::LiConsole, &reg::li_console::METRICS, 0)
    }

    /// SeaweedFS's gRPC ports: master, volume, filer and the S3 gateway.
    pub fn seaweedfs_grpc_ports(&self) -> [u16; 4] {
        let p = |port: &Port| self.at(Party::Seaweedfs, port, 0).port;
        [
            p(&reg::seaweedfs::MASTER_GRPC),
            p(&reg::seaweedfs::VOLUME_GRPC),
            p(&reg::seaweedfs::FILER_GRPC),
            self.slots[&(Party::Seaweedfs, S3_GRPC, 0)],
        ]
    }

    /// SeaweedFS master, volume and filer ports.
    pub fn seaweedfs_ports(&self) -> (u16, u16, u16) {
        let p = |port: &Port| self.at(Party::Seaweedfs, port, 0).port;
        (
            p(&reg::seaweedfs::MASTER),
            p(&reg::seaweedfs::VOLUME),
            p(&reg::seaweedfs::FILER),
        )
    }
}

impl Addressing for LocalAddressing {
    fn bind_addresses(&self) -> Vec<String> {
        vec!["127.0.0.1".into()]
    }
    fn http(&self, p: &SynapseProcess) -> HostPort {
        self.synapse(p, &reg::synapse::HTTP)
    }
    fn replication(&self, p: &SynapseProcess) -> HostPort {
        self.synapse(p, &reg::synapse::REPLICATION)
    }
    fn metrics(&self, p: &SynapseProcess) -> HostPort {
        self.synapse(p, &reg::synapse::METRICS)
    }
    fn router(&self) -> HostPort {
        self.at(Party::Router, &reg::router::HTTP, 0)
    }
    fn router_stats(&self) -> HostPort {
        self.at(Party::Router, &reg::router::STATS, 0)
    }
    fn content_scanner(&self) -> HostPort {
        self.at(Party::ContentScanner, &reg::content_scanner::HTTP, 0)
    }
    fn clamd(&self) -> HostPort {
        self.at(Party::Clamav, &reg::clamav::CLAMD, 0)
    }
    fn li_postgres(&self) -> HostPort {
        self.at(Party::LiPostgres, &reg::cnpg::POSTGRES, 0)
    }
    fn li_sync(&self) -> HostPort {
        self.at(Party::LiSync, &reg::li_sync::HTTP, 0)
    }
    fn key_vault(&self) -> HostPort {
        self.at(Party::KeyVault, &reg::key_vault::HTTP, 0)
    }
    fn li_console(&self) -> HostPort {
        self.at(Party::LiConsole, &reg::li_console::HTTP, 0)
    }
    fn postgres(&self) -> HostPort {
        self.at(Party::Postgres, &reg::cnpg::POSTGRES, 0)
    }
    fn redis_master(&self) -> HostPort {
        self.at(Party::ValkeyMaster, &reg::valkey::REDIS, 0)
    }
    fn redis_instance(&self, i: u32) -> HostPort {
        self.at(Party::Valkey, &reg::valkey::REDIS, i)
    }
    fn sentinel(&self, i: u32) -> HostPort {
        self.at(Party::Valkey, &reg::valkey::SENTINEL, i)
    }
    fn s3_endpoint(&self) -> String {
        format!(
            "http://127.0.0.1:{}",
            self.at(Party::Seaweedfs, &reg::seaweedfs::S3, 0).port
        )
    }
    fn public_base_url(&self, _config: &Config) -> String {
        format!("http://127.0.0.1:{}/", self.router().port)
    }
    fn synapse_paths(&self) -> SynapsePaths {
        SynapsePaths::under(&self.state_dir.display().to_string())
    }
    fn turn(&self, _config: &Config) -> Turn {
        let relay = |j| self.slots[&(Party::Coturn, RELAY, j)];
        Turn {
            public: self.at(Party::Coturn, &reg::coturn::TURN, 0),
            listen_ip: Some("127.0.0.1".into()),
            tls: None,
            relay: relay(0)..=relay(LOCAL_RELAY_PORTS - 1),
            external_ip: "127.0.0.1".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addressing() -> LocalAddressing {
        let order = ["synapse-main", "synapse-generic-0", "synapse-generic-1"]
            .map(String::from)
            .to_vec();
        LocalAddressing::new(20000, "/srv/state".into(), order, 3)
    }

    #[test]
    fn the_router_is_on_the_base_port_and_no_port_is_given_twice() {
        let a = addressing();
        assert_eq!(a.router().port, 20000);
        assert_eq!(a.router_stats().port, 20001);
        let ports = a.ports();
        let mut unique = ports.clone();
        unique.dedup();
        assert_eq!(ports, unique, "a port given twice");
        // Contiguous from the base: the block is what `up` checks.
        let block: Vec<u16> = (20000..=a.last_port()).collect();
        assert!(block.iter().all(|p| ports.contains(p)));
    }

    #[test]
    fn every_local_component_has_its_ports() {
        let a = addressing();
        let process = |name: &str| SynapseProcess {
            name: name.into(),
            group: "g".into(),
            kind: None,
            ordinal: 0,
            initial_replicas: 1,
        };
        let (main, worker) = (process("synapse-main"), process("synapse-generic-1"));
        assert_ne!(a.http(&main).port, a.http(&worker).port);
        for i in 0..3 {
            assert_ne!(a.redis_instance(i).port, a.sentinel(i).port);
        }
        for hp in [
            a.postgres(),
            a.li_postgres(),
            a.redis_master(),
            a.content_scanner(),
            a.clamd(),
            a.li_sync(),
            a.key_vault(),
            a.li_console(),
            a.li_console_metrics(),
            a.synapse_li_http(),
            a.turn(&Config::new(
                "a.test",
                mxstack_spec::Tier::T100,
                Default::default(),
            ))
            .public,
        ] {
            assert!(hp.port > 20001 && hp.port <= a.last_port(), "{hp}");
        }
    }
}
