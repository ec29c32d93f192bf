//! What changing a running deployment from one config to another takes (`mxstack plan --from
//! OLD`): which changes are live, which restart what, and which need every Synapse process to
//! stop before any starts again.
//!
//! Synapse processes must agree on who writes which stream (`instance_map`, `stream_writers`)
//! and on which instances shard federation sending and pushers: a process with the old lists
//! beside one with the new would send a stream's writes or a destination's events to the wrong
//! instance. Synapse forgets a removed writer's stale position itself at start (synapse #8419),
//! so a coordinated restart loses nothing.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::workers::{self, WorkerKind};
use crate::Topology;

/// What applying one change takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// New or larger nodes, needed before the rest.
    Nodes,
    /// Processes are added or removed; the others keep running (the router learns them).
    Live,
    /// The named workloads restart one pod at a time.
    RollingRestart,
    /// Every Synapse process stops before any starts with the new lists.
    CoordinatedRestart,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub what: String,
    pub effect: Effect,
}

fn change(what: String, effect: Effect) -> Change {
    Change { what, effect }
}

/// Every change from `old` to `new`, in the order to carry them out: nodes first, the
/// coordinated restart last.
pub fn diff(old: &Topology, new: &Topology) -> Vec<Change> {
    let mut out = groups(old, new);
    out.extend(coordination(old, new));
    out.extend(infrastructure(old, new));
    out.sort_by_key(|c| c.effect);
    out
}

fn groups(old: &Topology, new: &Topology) -> Vec<Change> {
    let map = |t: &Topology| -> BTreeMap<String, (WorkerKind, u32, String)> {
        t.groups
            .iter()
            .map(|g| {
                let res = format!("{} CPU, {} MiB", g.resources.cpu(), g.resources.memory_mib);
                (g.name.clone(), (g.kind, g.replicas, res))
            })
            .collect()
    };
    let (a, b) = (map(old), map(new));
    let mut out = Vec::new();
    for (name, (kind, replicas, res)) in &b {
        match a.get(name) {
            None => out.push(change(
                format!("add worker group {name} ({replicas} × {})", kind.as_str()),
                Effect::Live,
            )),
            Some((_, r0, res0)) => {
                if r0 != replicas {
                    out.push(change(
                        format!("{name}: {r0} → {replicas} processes"),
                        Effect::Live,
                    ));
                }
                if res0 != res {
                    out.push(change(
                        format!("{name}: resources {res0} → {res}"),
                        Effect::RollingRestart,
                    ));
                }
            }
        }
    }
    for name in a.keys().filter(|n| !b.contains_key(*n)) {
        out.push(change(format!("remove worker group {name}"), Effect::Live));
    }
    out
}

/// Stream writers and sharded duties: every process must change its lists at the same time.
fn coordination(old: &Topology, new: &Topology) -> Vec<Change> {
    let writers = |t: &Topology| -> BTreeMap<String, Vec<String>> {
        workers::stream_writers(&t.groups)
            .into_iter()
            .map(|(s, w)| (s.key().to_string(), w))
            .collect()
    };
    let sharded = |t: &Topology| -> BTreeMap<String, Vec<String>> {
        let mut m = BTreeMap::new();
        for kind in [WorkerKind::FederationSender, WorkerKind::Pusher] {
            let names: Vec<String> = t
                .groups_of(kind)
                .flat_map(|g| (0..g.replicas).map(|i| g.process_name(i)))
                .collect();
            m.insert(format!("{} instances", kind.as_str()), names);
        }
        m
    };
    let mut out = Vec::new();
    for (a, b, label) in [
        (writers(old), writers(new), "writers of stream "),
        (sharded(old), sharded(new), ""),
    ] {
        let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
        for k in keys {
            let (x, y) = (
                a.get(k).cloned().unwrap_or_default(),
                b.get(k).cloned().unwrap_or_default(),
            );
            if x != y {
                out.push(change(
                    format!("{label}{k}: [{}] → [{}]", x.join(", "), y.join(", ")),
                    Effect::CoordinatedRestart,
                ));
            }
        }
    }
    out
}

fn infrastructure(old: &Topology, new: &Topology) -> Vec<Change> {
    let (a, b) = (&old.sizing, &new.sizing);
    let mut out = Vec::new();
    for n in &b.nodes {
        let before = a.nodes.iter().find(|o| o.role == n.role);
        let was = before.map(|o| (o.count, o.vcpu, o.ram_gb));
        if was != Some((n.count, n.vcpu, n.ram_gb)) {
            let from = was.map_or("none".to_string(), |(c, v, r)| {
                format!("{c} × {v} vCPU/{r} GB")
            });
            out.push(change(
                format!(
                    "nodes {}: {from} → {} × {} vCPU/{} GB",
                    n.role, n.count, n.vcpu, n.ram_gb
                ),
                Effect::Nodes,
            ));
        }
    }
    let mut when = |differs: bool, what: String, effect: Effect| {
        if differs {
            out.push(change(what, effect));
        }
    };
    when(
        old.budget.max_connections != new.budget.max_connections,
        format!("PostgreSQL max_connections {} → {} (each instance restarts, replicas first, then a switchover)", old.budget.max_connections, new.budget.max_connections),
        Effect::RollingRestart,
    );
    when(
        a.postgres.storage != b.postgres.storage,
        format!(
            "PostgreSQL volumes {} → {} (grown in place if the StorageClass allows expansion)",
            a.postgres.storage, b.postgres.storage
        ),
        Effect::Live,
    );
    when(
        a.redis.maxmemory_mib != b.redis.maxmemory_mib,
        format!(
            "Valkey maxmemory {} → {} MiB",
            a.redis.maxmemory_mib, b.redis.maxmemory_mib
        ),
        Effect::RollingRestart,
    );
    when(
        a.haproxy_replicas != b.haproxy_replicas,
        format!(
            "router replicas {} → {}",
            a.haproxy_replicas, b.haproxy_replicas
        ),
        Effect::Live,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use mxstack_spec::{Component, ComponentOverride, Config, Tier};

    fn topo(tier: Tier, persisters: Option<u32>) -> Topology {
        let mut c = Config::new("acme.test", tier, mxstack_spec::default_features());
        if let Some(n) = persisters {
            c.overrides.insert(
                Component::EventPersister,
                ComponentOverride {
                    replicas: Some(n),
                    ..c.override_for(Component::EventPersister)
                },
            );
        }
        Topology::build(&c)
    }

    #[test]
    fn the_same_config_changes_nothing() {
        assert_eq!(diff(&topo(Tier::T1k, None), &topo(Tier::T1k, None)), vec![]);
    }

    #[test]
    fn more_event_persisters_need_a_coordinated_restart() {
        let old = topo(Tier::T1k, Some(1));
        let new = topo(Tier::T1k, Some(2));
        let d = diff(&old, &new);
        let events = d
            .iter()
            .find(|c| c.what.starts_with("writers of stream events"))
            .expect("events writers change");
        assert_eq!(events.effect, Effect::CoordinatedRestart, "{d:#?}");
        assert!(
            d.iter()
                .any(|c| c.effect == Effect::Live && c.what.contains("event-persister")),
            "{d:#?}"
        );
    }

    #[test]
    fn a_tier_change_lists_nodes_first_and_the_coordinated_restart_last() {
        let d = diff(&topo(Tier::T1k, None), &topo(Tier::T5k, None));
        assert!(d.iter().any(|c| c.effect == Effect::Nodes), "{d:#?}");
        assert!(
            d.iter()
                .any(|c| c.what.starts_with("PostgreSQL max_connections")),
            "{d:#?}"
        );
        let effects: Vec<Effect> = d.iter().map(|c| c.effect).collect();
        let mut sorted = effects.clone();
        sorted.sort();
        assert_eq!(effects, sorted);
    }
}
