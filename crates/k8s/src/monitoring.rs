//! Prometheus Operator objects (feature `monitoring`): what to scrape and a few alerts that matter.

use mxstack_topology::registry::{self as reg, Scrape, Selector};
use serde_json::{json, Value};

use crate::meta::*;
use crate::{Ctx, Out, Phase};

const FILE: &str = "monitoring.yaml";
fn service_monitor(ctx: &Ctx, name: &str, target: &str, port: &str, path: &str) -> Value {
    json!({
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": meta_json(ctx, name, "monitoring"),
        "spec": {
            "selector": { "matchLabels": { METRICS_LABEL: target } },
            "endpoints": [{ "port": port, "path": path, "interval": "30s" }],
        },
    })
}

fn pod_monitor(ctx: &Ctx, name: &str, selector: Labels, port: &str) -> Value {
    json!({
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": meta_json(ctx, name, "monitoring"),
        "spec": {
            "selector": { "matchLabels": selector },
            "podMetricsEndpoints": [{ "port": port, "interval": "30s" }],
        },
    })
}

fn prometheus_rule(ctx: &Ctx) -> Value {
    let rules: Vec<Value> = crate::alerts::alerts(ctx.cfg)
        .into_iter()
        .map(|a| {
            json!({
                "alert": a.name,
                "expr": a.expr,
                "for": a.for_,
                "labels": { "severity": a.severity },
                "annotations": { "summary": a.summary, "description": a.fix },
            })
        })
        .collect();
    json!({
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": meta_json(ctx, "mxstack", "monitoring"),
        "spec": { "groups": [{ "name": "mxstack", "rules": rules }] },
    })
}

/// A ServiceMonitor or PodMonitor for every component of the registry that declares how it is
/// scraped (and whose feature is on), then the alerts.
pub fn render(ctx: &Ctx, out: &mut Out) {
    for c in reg::ALL {
        if c.feature.is_some_and(|f| !ctx.has(f)) {
            continue;
        }
        let monitor = match c.scrape {
            Some(Scrape::Service { port, path }) => {
                service_monitor(ctx, c.name(), c.name(), port.name, path)
            }
            Some(Scrape::Pod { port }) => {
                // A CloudNativePG cluster's monitor is named after the cluster.
                let name = match c.selector {
                    Selector::CnpgCluster(cluster) => cluster,
                    _ => c.name(),
                };
                pod_monitor(ctx, name, selector_of(c), port)
            }
            None => continue,
        };
        out.add(Phase::Monitoring, FILE, monitor);
    }
    out.add(Phase::Monitoring, FILE, prometheus_rule(ctx));
}
