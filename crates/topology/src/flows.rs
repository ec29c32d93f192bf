//! Who talks to whom: every network flow the system needs, collected from the components'
//! declarations (crates/topology/src/registry.rs). NetworkPolicies are generated from this list
//! (default deny, then exactly these), and docs/NETWORK.md lists it, so the two cannot differ.

use crate::registry;
use crate::Topology;

pub use crate::party::{Flow, Party, Protocol, KUBERNETES_API_PORTS};

/// All flows of the components whose feature is on, sorted: the order of the declarations
/// does not show in the policies or in NETWORK.md.
pub fn flows(t: &Topology) -> Vec<Flow> {
    let mut f: Vec<Flow> = registry::ALL
        .iter()
        .filter(|c| c.feature.is_none_or(|x| t.has(x)))
        .flat_map(|c| (c.flows)(t))
        .collect();
    f.sort();
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{self as reg, s3_target};
    use mxstack_spec::{Config, Feature, LiSyncMode, MediaBackend, Tier};

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
    fn the_log_pipeline_has_flows_only_with_monitoring_and_loki_reaches_nothing() {
        let mut c = Config::new(
            "acme.test",
            Tier::T1k,
            [Feature::Li, Feature::Monitoring].into_iter().collect(),
        );
        let f = flows(&Topology::build(&c));
        let into_loki: Vec<(Party, Vec<u16>)> = f
            .iter()
            .filter(|x| x.to == Party::Loki)
            .map(|x| (x.from, x.ports.clone()))
            .collect();
        let push = vec![reg::loki::HTTP.number];
        assert_eq!(
            into_loki,
            [(Party::Alloy, push.clone()), (Party::Monitoring, push)]
        );
        assert!(f.iter().all(|x| x.from != Party::Loki));
        let from_alloy: Vec<(Party, Vec<u16>)> = f
            .iter()
            .filter(|x| x.from == Party::Alloy)
            .map(|x| (x.to, x.ports.clone()))
            .collect();
        assert_eq!(
            from_alloy,
            [
                (Party::Loki, vec![reg::loki::HTTP.number]),
                (Party::KubernetesApi, KUBERNETES_API_PORTS.to_vec()),
            ]
        );
        c.features.remove(&Feature::Monitoring);
        let f = flows(&Topology::build(&c));
        assert!(f.iter().all(|x| ![x.from, x.to]
            .iter()
            .any(|p| matches!(p, Party::Loki | Party::Alloy))));
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
