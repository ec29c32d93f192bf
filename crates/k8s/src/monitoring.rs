//! Prometheus Operator objects (feature `monitoring`): what to scrape and a few alerts that matter.

use mxstack_topology::registry::{self as reg, Scrape};
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
    json!({
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": meta_json(ctx, "mxstack", "monitoring"),
        "spec": { "groups": [mxstack_monitoring::rule_group(ctx.cfg)] },
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
            Some(Scrape::Pod { port }) => pod_monitor(
                ctx,
                mxstack_monitoring::monitor_name(c),
                selector_of(c),
                port,
            ),
            None => continue,
        };
        out.add(Phase::Monitoring, FILE, monitor);
    }
    out.add(Phase::Monitoring, FILE, prometheus_rule(ctx));
    for d in mxstack_monitoring::dashboards::dashboards(ctx.t) {
        out.add(Phase::Monitoring, "dashboards.yaml", dashboard(ctx, &d));
    }
}

/// A dashboard as a ConfigMap for the Grafana sidecar (kube-prometheus-stack's
/// `grafana.sidecar.dashboards`, which must search this namespace: docs/MONITORING.md).
fn dashboard(ctx: &Ctx, d: &mxstack_monitoring::dashboards::Dashboard) -> Value {
    use mxstack_monitoring::dashboards::{grafana_json, SIDECAR_LABEL};
    let mut meta = meta_json(ctx, d.uid, "monitoring");
    meta["labels"][SIDECAR_LABEL] = json!("1");
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta,
        "data": { format!("{}.json", d.uid): grafana_json(d).to_string() },
    })
}
