//! The coordinated restart of Synapse on a cluster. Every Synapse process must agree on who
//! writes which stream (`instance_map`, `stream_writers`) and on the sharded instances
//! (`federation_sender_instances`, `pusher_instances`); a new Synapse release may also change the
//! database schema, which main migrates at start and old workers cannot read. A rolling update
//! would run old and new side by side, so instead:
//!
//! 1. every Synapse workload is applied with the new template at 0 replicas, and deploy waits
//!    until its pods are gone;
//! 2. the rest of the phase is applied, then main, which is waited for (its start migrates);
//! 3. the workers are applied at their replica counts, all agreeing on the new lists.
//!
//! It happens when the lists in the cluster's Synapse ConfigMap differ from the render's, or
//! when asked (`mxstack deploy --coordinated`, what `mxstack upgrade --kubernetes` says for a
//! release that changes the schema).

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{Cluster, Error, Item};

/// The ConfigMap and key holding the settings every Synapse process shares.
pub const SYNAPSE_CONFIG_MAP: &str = "synapse-config";
pub const SYNAPSE_CONFIG_KEY: &str = "homeserver.yaml";
/// The label value of Synapse's workloads (`app.kubernetes.io/name`), main's workload name.
pub const SYNAPSE_NAME: &str = "synapse";
pub const SYNAPSE_MAIN: &str = "synapse-main";
/// The settings every Synapse process must agree on.
pub const AGREED: [&str; 4] = [
    "instance_map",
    "stream_writers",
    "federation_sender_instances",
    "pusher_instances",
];

/// The agreed settings of a homeserver.yaml (absent ones as null).
pub fn agreed(homeserver_yaml: &str) -> Option<Value> {
    let v: Value = serde_saphyr::from_str(homeserver_yaml).ok()?;
    Some(
        AGREED
            .iter()
            .map(|k| (k.to_string(), v[*k].clone()))
            .collect(),
    )
}

/// Synapse's Deployments and StatefulSets in the render (Synapse LI is another deployment with
/// its own database and streams: not one of them).
pub fn is_synapse_workload(item: &Item) -> bool {
    matches!(item.kind.as_str(), "StatefulSet" | "Deployment")
        && item.value["metadata"]["labels"]["app.kubernetes.io/name"] == SYNAPSE_NAME
}

fn rendered_config(items: &[Item]) -> Option<&str> {
    items
        .iter()
        .find(|i| i.kind == "ConfigMap" && i.name == SYNAPSE_CONFIG_MAP)
        .and_then(|i| i.value["data"][SYNAPSE_CONFIG_KEY].as_str())
}

/// Why this deploy must be coordinated, if it must: the agreed settings change. None on a first
/// deploy (no ConfigMap yet) or when they stay the same.
pub async fn reason(
    cluster: &Cluster,
    items: &[Item],
    home: &str,
) -> Result<Option<String>, Error> {
    let Some(wanted) = rendered_config(items).and_then(agreed) else {
        return Ok(None);
    };
    let served = cluster.require("v1", "ConfigMap").await?;
    let api = cluster.api(&served, Some(home));
    let live = api
        .get_opt(SYNAPSE_CONFIG_MAP)
        .await
        .map_err(|e| cluster.error(&served, SYNAPSE_CONFIG_MAP, "get", e))?;
    let Some(live) = live else {
        return Ok(None);
    };
    let live = serde_json::to_value(live).expect("objects serialize");
    let Some(now) = live["data"][SYNAPSE_CONFIG_KEY].as_str().and_then(agreed) else {
        return Ok(None);
    };
    let changed: Vec<&str> = AGREED
        .iter()
        .filter(|k| now[**k] != wanted[**k])
        .copied()
        .collect();
    Ok((!changed.is_empty()).then(|| {
        format!(
            "{} change: every Synapse process must stop before any starts with the new lists",
            changed.join(", ")
        )
    }))
}

/// `item` with 0 replicas (its template as rendered).
pub fn at_zero(item: &Item) -> Item {
    let mut zero = item.clone();
    zero.value["spec"]["replicas"] = Value::from(0);
    zero
}

/// Waits until `item`'s workload runs no pod.
pub async fn wait_stopped(
    cluster: &Cluster,
    item: &Item,
    timeout: Duration,
    poll: Duration,
) -> Result<Duration, Error> {
    let served = cluster.require(&item.api_version, &item.kind).await?;
    let api = cluster.api_for(&served, item.namespace.as_deref());
    let start = Instant::now();
    loop {
        let live = api
            .get(&item.name)
            .await
            .map_err(|e| cluster.error(&served, &item.id(), "get", e))?;
        let live = serde_json::to_value(live).expect("objects serialize");
        let pods = live["status"]["replicas"].as_u64().unwrap_or(0);
        if pods == 0 {
            return Ok(start.elapsed());
        }
        if start.elapsed() >= timeout {
            return Err(Error::Timeout {
                object: item.id(),
                waited: start.elapsed(),
                last: format!("{pods} pods still running after scaling to 0"),
                events: Vec::new(),
            });
        }
        tokio::time::sleep(poll).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agreed_settings_are_read_and_others_ignored() {
        let a = agreed("server_name: a\nstream_writers:\n  events: [p0]\npusher_instances: [x]\n")
            .unwrap();
        let b = agreed("server_name: b\nstream_writers:\n  events: [p0]\npusher_instances: [x]\n")
            .unwrap();
        assert_eq!(a, b);
        let c = agreed("stream_writers:\n  events: [p0, p1]\npusher_instances: [x]\n").unwrap();
        assert_ne!(a, c);
        assert_eq!(a["instance_map"], Value::Null);
    }
}
