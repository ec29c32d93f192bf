//! Invariants of the model for every tier: budgets hold, lists agree, local and Kubernetes
//! addressing produce the same processes.

use mxstack_k8s::KubernetesAddressing;
use mxstack_local::LocalAddressing;
use mxstack_spec::{default_features, Config, Feature, Tier};
use mxstack_topology::workers::{self, WorkerKind};
use mxstack_topology::{synapse, Addressing, Topology};

fn all() -> std::collections::BTreeSet<Feature> {
    Feature::ALL.into_iter().collect()
}

#[test]
fn connection_budget_holds_for_every_tier_including_autoscaler_maxima() {
    for tier in Tier::ALL {
        let t = Topology::build(&Config::new("acme.test", tier, all()));
        let sum: u32 = t
            .processes()
            .iter()
            .map(|p| t.budget.for_group(&p.group).cp_max)
            .sum();
        assert_eq!(sum, t.budget.total_cp_max, "{tier}");
        assert!(
            sum * 100 <= t.budget.max_connections * 85,
            "{tier}: {sum} > 85% of {}",
            t.budget.max_connections
        );
        assert!(
            t.budget
                .pools
                .iter()
                .all(|p| p.cp_min >= 1 && p.cp_min <= p.cp_max),
            "{tier}"
        );
    }
}

#[test]
fn seed_component_counts_are_met() {
    // Seed 003: 100 CCU = 2 sync, 2 generic, 2 event persisters, 2 federation; 20K = 18/8/4/8.
    for (tier, expected) in [(Tier::T100, (2, 2, 2, 2)), (Tier::T20k, (18, 8, 4, 8))] {
        let t = Topology::build(&Config::new("acme.test", tier, all()));
        let n = |k| t.groups_of(k).map(|g| g.replicas).sum::<u32>();
        let got = (
            n(WorkerKind::Synchrotron),
            n(WorkerKind::Generic),
            n(WorkerKind::EventPersister),
            n(WorkerKind::FederationSender),
        );
        assert_eq!(got, expected, "{tier}");
    }
}

#[test]
fn stream_writers_and_instance_map_agree() {
    for tier in Tier::ALL {
        let t = Topology::build(&Config::new("acme.test", tier, default_features()));
        let hs = synapse::homeserver_yaml(&t, &KubernetesAddressing::new(&t.config));
        let map = hs["instance_map"].as_object().unwrap();
        for (stream, writers) in workers::stream_writers(&t.groups) {
            if writers != ["main"] {
                assert_eq!(
                    hs["stream_writers"][stream.key()],
                    serde_json::json!(writers)
                );
            } else {
                assert!(hs["stream_writers"].get(stream.key()).is_none());
            }
            for w in &writers {
                assert!(
                    map.contains_key(w),
                    "{tier}: {w} writes {} but has no instance_map entry",
                    stream.key()
                );
            }
            if stream.single_writer() {
                assert_eq!(writers.len(), 1);
            }
        }
        // Events go to the event persisters, never main, once they exist (004 issue 2.5).
        assert!(!hs["stream_writers"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w == "main"));
    }
}

#[test]
fn federation_senders_only_with_federation() {
    let off = Topology::build(&Config::new("acme.test", Tier::T1k, default_features()));
    let hs = synapse::homeserver_yaml(&off, &KubernetesAddressing::new(&off.config));
    assert_eq!(hs["federation_sender_instances"], serde_json::json!([]));
    assert_eq!(hs["federation_domain_whitelist"], serde_json::json!([]));
    let on = Topology::build(&Config::new("acme.test", Tier::T1k, all()));
    let hs = synapse::homeserver_yaml(&on, &KubernetesAddressing::new(&on.config));
    assert_eq!(
        hs["federation_sender_instances"],
        serde_json::json!(["synapse-federation-sender-0", "synapse-federation-sender-1"])
    );
}

#[test]
fn local_and_kubernetes_share_everything_but_addresses() {
    let t = Topology::build(&Config::new("acme.test", Tier::T1k, all()));
    let k8s = synapse::homeserver_yaml(&t, &KubernetesAddressing::new(&t.config));
    let order = t.processes().iter().map(|p| p.name.clone()).collect();
    let local = LocalAddressing::new(20000, "/var/lib/mx".into(), order, t.sizing.redis.instances);
    let loc = synapse::homeserver_yaml(&t, &local);
    for key in [
        "stream_writers",
        "federation_sender_instances",
        "pusher_instances",
        "run_background_tasks_on",
        "enable_media_repo",
        "redaction_retention_period",
    ] {
        assert_eq!(k8s[key], loc[key], "{key}");
    }
    let k: Vec<_> = k8s["instance_map"].as_object().unwrap().keys().collect();
    let l: Vec<_> = loc["instance_map"].as_object().unwrap().keys().collect();
    assert_eq!(k, l);
    let mut ports = std::collections::BTreeSet::new();
    for p in t.processes() {
        for hp in [local.http(&p), local.replication(&p), local.metrics(&p)] {
            assert!(ports.insert(hp.port), "port {} used twice", hp.port);
        }
    }
}

#[test]
fn main_censors_redactions_after_the_configured_period() {
    let mut c = Config::new("acme.test", Tier::T1k, all());
    let t = Topology::build(&c);
    let hs = synapse::homeserver_yaml(&t, &KubernetesAddressing::new(&t.config));
    assert_eq!(hs["redaction_retention_period"], serde_json::json!("7d"));
    c.synapse.redaction_retention_period = "30s".into();
    for t in [Topology::build(&c), Topology::single_process(&c)] {
        let hs = synapse::homeserver_yaml(&t, &KubernetesAddressing::new(&t.config));
        assert_eq!(hs["redaction_retention_period"], serde_json::json!("30s"));
    }
    // Synapse LI never censors: its database is evidence.
    let t = Topology::build(&c);
    let paths = mxstack_topology::SynapsePaths::under("/mxstack");
    let li = mxstack_topology::li_browsing::homeserver_yaml(
        &t,
        &KubernetesAddressing::new(&t.config),
        8008,
        &paths,
    );
    assert_eq!(li["redaction_retention_period"], serde_json::Value::Null);
}

#[test]
fn single_process_serves_everything_from_main() {
    let t = Topology::single_process(&Config::new("acme.test", Tier::T1k, all()));
    assert_eq!(t.processes().len(), 1);
    let hs = synapse::homeserver_yaml(&t, &KubernetesAddressing::new(&t.config));
    assert_eq!(hs["enable_media_repo"], serde_json::json!(true));
    assert!(hs.get("federation_sender_instances").is_none());
    assert!(hs.get("pusher_instances").is_none());
    assert!(hs.get("run_background_tasks_on").is_none());
    assert_eq!(hs["stream_writers"], serde_json::json!({}));
    let names = hs["listeners"][0]["resources"][0]["names"].clone();
    assert!(
        names.as_array().unwrap().iter().any(|n| n == "media"),
        "{names}"
    );
    // Every route falls back to main, except media downloads: those still pass the scanner,
    // which fetches them from main.
    assert!(mxstack_topology::routing::routes(&t)
        .iter()
        .all(|r| r.backend == "main" || r.backend == "content-scanner"));
    let addr = KubernetesAddressing::new(&t.config);
    assert_eq!(
        mxstack_topology::antivirus::upstreams(&t, &addr),
        vec![format!("http://{}", addr.http(&t.processes()[0]))]
    );
    assert!(t.budget.total_cp_max <= t.budget.budget);
    assert!(t.budget.pools.iter().any(|p| p.group == "main"));
}

#[test]
fn presence_follows_the_setting_and_is_on_by_default() {
    let mut c = Config::new("acme.test", Tier::T100, default_features());
    let enabled = |c: &Config| {
        let t = Topology::build(c);
        synapse::homeserver_yaml(&t, &KubernetesAddressing::new(&t.config))["presence"]["enabled"]
            .clone()
    };
    assert_eq!(enabled(&c), serde_json::json!(true));
    c.synapse.presence = false;
    assert_eq!(enabled(&c), serde_json::json!(false));
}
