//! Prometheus Operator objects (feature `monitoring`): what to scrape and a few alerts that matter.

use mxstack_spec::Feature;
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

/// (alert, PromQL, for, severity, summary).
pub fn alerts(
    ctx: &Ctx,
) -> Vec<(
    &'static str,
    String,
    &'static str,
    &'static str,
    &'static str,
)> {
    let ns = ctx.ns();
    let mut alerts = vec![
        (
            "SynapseDown",
            format!("up{{namespace=\"{ns}\", service=\"{}\"}} == 0", crate::synapse::METRICS_SERVICE),
            "5m",
            "critical",
            "A Synapse process is not answering on its metrics port.",
        ),
        (
            "SynapseMainMissing",
            format!(
                "absent(up{{namespace=\"{ns}\", service=\"{}\", pod=\"{}-0\"}} == 1)",
                crate::synapse::METRICS_SERVICE,
                mxstack_topology::workers::MAIN_PROCESS
            ),
            "5m",
            "critical",
            "The Synapse main process is down: replication and admin are unavailable.",
        ),
        (
            "RouterBackendDown",
            // The content-scanner backend has no fallback: ContentScannerDown covers it.
            format!("max by (proxy) (haproxy_backend_active_servers{{namespace=\"{ns}\", proxy!~\"stats|matrix|{}\"}}) == 0", reg::content_scanner::COMPONENT.name()),
            "5m",
            "warning",
            "An HAProxy backend has no healthy worker; its requests fall back to main.",
        ),
        (
            "PostgresNotReady",
            format!("max by (pod) (cnpg_collector_up{{namespace=\"{ns}\"}}) == 0"),
            "5m",
            "critical",
            "A PostgreSQL instance reports it is not up.",
        ),
        (
            "PostgresReplicationLag",
            format!("max by (pod) (cnpg_pg_replication_lag{{namespace=\"{ns}\"}}) > 60"),
            "10m",
            "warning",
            "A PostgreSQL standby is more than a minute behind the primary.",
        ),
        (
            "ValkeyNoMaster",
            format!("sum(redis_instance_info{{namespace=\"{ns}\", role=\"master\"}}) != 1"),
            "2m",
            "critical",
            "Valkey does not have exactly one master: Synapse replication is at risk.",
        ),
    ];
    if ctx.has(Feature::Li) {
        alerts.extend(li_alerts(ns));
    }
    if ctx.has(Feature::Antivirus) {
        alerts.extend([
            (
                "ContentScannerDown",
                // Also fires when no scanner pod is scraped at all.
                format!("absent(up{{namespace=\"{ns}\", service=\"{}\"}} == 1)", reg::content_scanner::COMPONENT.name()),
                "5m",
                "critical",
                "No content scanner answers: media downloads and uploads fail (fail closed).",
            ),
            (
                "ClamdUnavailable",
                format!(
                    "sum(rate(mxstack_scanner_clamd_errors_total{{namespace=\"{ns}\"}}[5m])) > 0"
                ),
                "10m",
                "critical",
                "The content scanner cannot get verdicts from clamd: media requests get 503.",
            ),
            (
                "MalwareRefused",
                format!(
                    "sum(increase(mxstack_scanner_verdicts_total{{namespace=\"{ns}\", verdict=\"infected\"}}[15m])) > 0"
                ),
                "1m",
                "warning",
                "The content scanner refused infected media.",
            ),
        ]);
    }
    alerts
}

/// The LI data path (li-sync's metrics, crates/li-sync/src/status.rs).
fn li_alerts(
    ns: &str,
) -> Vec<(
    &'static str,
    String,
    &'static str,
    &'static str,
    &'static str,
)> {
    let m = |metric: &str| format!("{metric}{{namespace=\"{ns}\"}}");
    vec![
        (
            "LiSyncDown",
            // Also fires when li-sync is not scraped at all.
            format!("absent(up{{namespace=\"{ns}\", service=\"{}\"}} == 1)", reg::li_sync::COMPONENT.name()),
            "5m",
            "critical",
            "li-sync is down: the LI replica's schema, history and media copy are not kept.",
        ),
        (
            "LiDatabasesUnreachable",
            format!("max({}) == 0", m("mxstack_li_up")),
            "5m",
            "critical",
            "li-sync cannot read main or the LI replica.",
        ),
        (
            "LiReplicaLagging",
            format!("max({}) > 5", m("mxstack_li_lag_seconds")),
            "5m",
            "critical",
            "The LI replica is more than 5 seconds behind main.",
        ),
        (
            "LiSubscriptionDisabled",
            // li-sync pauses it for a moment while new tables join and resumes it at its next
            // schema check at the latest; minutes disabled means it cannot.
            format!("min({}) == 0", m("mxstack_li_subscription_enabled")),
            "5m",
            "critical",
            "The LI subscription is disabled: nothing from main reaches the replica. `mxstack li status` and li-sync's log say why; `mxstack li upgrade-schema` resumes it.",
        ),
        (
            "LiInitialCopyStalled",
            format!("max({}) == 1", m("mxstack_li_initial_copy_stalled")),
            "10m",
            "critical",
            "Tables of the LI replica's initial copy are not being copied (no worker runs for them): `mxstack li status` names the cause.",
        ),
        (
            "LiApplyErrors",
            format!("sum(increase({}[10m])) > 0", m("mxstack_li_apply_errors_total")),
            "1m",
            "critical",
            "The LI subscription fails to apply changes from main.",
        ),
        (
            "LiSlotRetainsTooMuchWal",
            format!(
                "max({}) > {}",
                m("mxstack_li_slot_retained_bytes"),
                10u64 << 30
            ),
            "10m",
            "critical",
            "Main keeps more than 10 GiB of WAL for the LI slot: its disk fills while the replica is behind.",
        ),
        (
            "LiMediaBacklogNotShrinking",
            format!(
                "(max({b}) > 0) and (max(delta({b}[30m])) >= 0)",
                b = m("mxstack_li_media_backlog_objects")
            ),
            "30m",
            "warning",
            "Media objects wait to be copied to the LI bucket and the backlog has not shrunk in 30 minutes.",
        ),
        (
            "LiMediaCopyErrors",
            format!(
                "sum(increase({}[30m])) > 0",
                m("mxstack_li_media_copy_errors_total")
            ),
            "15m",
            "warning",
            "li-sync fails to copy or verify media objects into the LI bucket.",
        ),
        (
            "LiConsoleAuditWriteFailures",
            format!(
                "sum(increase({}[10m])) > 0",
                m("mxstack_li_console_audit_write_failures_total")
            ),
            "1m",
            "critical",
            "The LI console cannot write its audit log: it refuses to show anything until it can.",
        ),
        (
            "LiConsoleLoginsRefused",
            format!(
                "sum(increase({}[15m])) > 20",
                m("mxstack_li_console_logins_refused_total")
            ),
            "1m",
            "warning",
            "More than 20 refused logins at the LI console in 15 minutes (guessing, or a locked-out colleague).",
        ),
        (
            "LiTablesWithoutReplicaIdentity",
            format!("max({}) > 0", m("mxstack_li_tables_without_identity")),
            "5m",
            "critical",
            "Tables on main have no usable replica identity: UPDATE and DELETE on them fail on main.",
        ),
    ]
}

fn prometheus_rule(ctx: &Ctx) -> Value {
    let rules: Vec<Value> = alerts(ctx)
        .into_iter()
        .map(|(name, expr, for_, severity, summary)| {
            json!({
                "alert": name,
                "expr": expr,
                "for": for_,
                "labels": { "severity": severity },
                "annotations": { "summary": summary },
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
