//! Grafana dashboards, generated from the model: a Synapse row per worker group that exists, an
//! LI dashboard only with `li`, and so on. Each panel is a PromQL query on the catalog's metrics
//! (MX-OUT-021 refuses any other), and `mxstack verify` asks the local stack's Prometheus for
//! every panel that can have data there (MX-VERIFY-016).
//!
//! Queries use fixed `[5m]` windows rather than Grafana's `$__rate_interval`, so that Prometheus
//! itself can evaluate them in that check.

use mxstack_spec::{Config, Feature};
use mxstack_topology::Topology;
use serde_json::{json, Value};

/// The label the Grafana sidecar (kube-prometheus-stack's) picks dashboard ConfigMaps up by.
pub const SIDECAR_LABEL: &str = "grafana_dashboard";

#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    pub title: String,
    pub expr: String,
    /// Grafana unit: `reqps`, `s`, `bytes`, `short`, `percentunit`.
    pub unit: &'static str,
    pub legend: &'static str,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub title: String,
    pub panels: Vec<Panel>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Dashboard {
    /// Also the ConfigMap's name and file name.
    pub uid: &'static str,
    pub title: &'static str,
    pub rows: Vec<Row>,
}

impl Dashboard {
    pub fn panels(&self) -> impl Iterator<Item = &Panel> {
        self.rows.iter().flat_map(|r| &r.panels)
    }

    /// Every panel with its place, `dashboard / row / panel`, for messages.
    pub fn named_panels(&self) -> impl Iterator<Item = (String, &Panel)> {
        self.rows.iter().flat_map(move |r| {
            r.panels
                .iter()
                .map(move |p| (format!("{} / {} / {}", self.title, r.title, p.title), p))
        })
    }
}

fn p(title: impl Into<String>, expr: String, unit: &'static str, legend: &'static str) -> Panel {
    Panel {
        title: title.into(),
        expr,
        unit,
        legend,
    }
}

fn row(title: impl Into<String>, panels: Vec<Panel>) -> Row {
    Row {
        title: title.into(),
        panels,
    }
}

/// Every dashboard of the deployment.
pub fn dashboards(t: &Topology) -> Vec<Dashboard> {
    let cfg = &t.config;
    let mut out = vec![synapse(t), postgres(cfg), valkey(cfg), router(cfg)];
    let m = media(cfg);
    if !m.rows.is_empty() {
        out.push(m);
    }
    if cfg.has(Feature::Li) {
        out.push(li(cfg));
    }
    out
}

fn synapse(t: &Topology) -> Dashboard {
    let ns = &t.config.namespace;
    let svc = mxstack_topology::registry::synapse::METRICS_SERVICE;
    let sel = |pods: &str| format!("namespace=\"{ns}\", service=\"{svc}\", pod=~\"{pods}\"");
    let mut rows = Vec::new();
    // (group, pod regex, whether it receives HTTP requests: routed or replication)
    let groups = std::iter::once(("main".to_string(), "synapse-main-.+".to_string(), true)).chain(
        t.groups.iter().map(|g| {
            let http = g.kind.serves_http() || g.kind.needs_replication_listener();
            (g.name.clone(), format!("{}-.+", g.object_name()), http)
        }),
    );
    for (name, pods, http) in groups {
        let s = sel(&pods);
        let mut panels = Vec::new();
        if http {
            panels.push(p(
                "Requests",
                format!(
                    "sum by (pod) (rate(synapse_http_server_requests_received_total{{{s}}}[5m]))"
                ),
                "reqps",
                "{{pod}}",
            ));
            panels.push(p("p95 latency", format!("histogram_quantile(0.95, sum by (le, pod) (rate(synapse_http_server_response_time_seconds_bucket{{{s}}}[5m])))"), "s", "{{pod}}"));
        }
        panels.extend([
            p(
                "Database time per second",
                format!(
                    "sum by (pod) (rate(synapse_storage_transaction_time_sum_total{{{s}}}[5m]))"
                ),
                "s",
                "{{pod}}",
            ),
            p(
                "CPU",
                format!("sum by (pod) (rate(process_cpu_seconds_total{{{s}}}[5m]))"),
                "short",
                "{{pod}}",
            ),
            p(
                "Memory",
                format!("sum by (pod) (process_resident_memory_bytes{{{s}}})"),
                "bytes",
                "{{pod}}",
            ),
        ]);
        rows.push(row(name, panels));
    }
    let all = format!("namespace=\"{ns}\", service=\"{svc}\"");
    rows.push(row(
        "Caches, replication and sync",
        vec![
            p("Cache evictions by reason", format!("sum by (reason) (synapse_util_caches_cache_evicted_size{{{all}}})"), "short", "{{reason}}"),
            p("Cache hit ratio", format!("sum(rate(synapse_util_caches_cache_hits{{{all}}}[5m])) / sum(rate(synapse_util_caches_cache{{{all}}}[5m]))"), "percentunit", "hit ratio"),
            p("Replication connections", format!("sum by (pod) (synapse_replication_tcp_resource_total_connections{{{all}}})"), "short", "{{pod}}"),
            // Clients parked in a long-poll /sync (or /events) on each process.
            p("Sync: clients waiting for events", format!("sum by (pod) (synapse_notifier_listeners{{{all}}})"), "short", "{{pod}}"),
        ],
    ));
    let mut events = vec![p(
        "Events persisted",
        format!("sum by (pod) (rate(synapse_storage_events_persisted_events_total{{{all}}}[5m]))"),
        "short",
        "{{pod}}",
    )];
    if t.config.has(Feature::Federation) {
        events.push(p(
            "Federation: pending PDUs",
            format!("sum by (pod) (synapse_federation_transaction_queue_pending_pdus{{{all}}})"),
            "short",
            "{{pod}}",
        ));
    }
    rows.push(row("Event persistence and federation", events));
    Dashboard {
        uid: "mxstack-synapse",
        title: "Synapse",
        rows,
    }
}

fn postgres(cfg: &Config) -> Dashboard {
    let ns = &cfg.namespace;
    let s = format!("namespace=\"{ns}\"");
    Dashboard {
        uid: "mxstack-postgres",
        title: "PostgreSQL",
        rows: vec![row(
            "Instances",
            vec![
                p("Backends by state", format!("sum by (pod, state) (cnpg_backends_total{{{s}}})"), "short", "{{pod}} {{state}}"),
                p("Connections used of max_connections", format!("sum by (pod) (cnpg_backends_total{{{s}}}) / on (pod) max by (pod) (cnpg_pg_settings_setting{{{s}, name=\"max_connections\"}})"), "percentunit", "{{pod}}"),
                p("Longest transaction", format!("max by (pod) (cnpg_backends_max_tx_duration_seconds{{{s}}})"), "s", "{{pod}}"),
                p("Commits per second", format!("sum by (pod) (rate(cnpg_pg_stat_database_xact_commit{{{s}}}[5m]))"), "short", "{{pod}}"),
                p("Database size", format!("sum by (pod, datname) (cnpg_pg_database_size_bytes{{{s}}})"), "bytes", "{{pod}} {{datname}}"),
                p("Replication lag", format!("max by (pod) (cnpg_pg_replication_lag{{{s}}})"), "s", "{{pod}}"),
            ],
        )],
    }
}

fn valkey(cfg: &Config) -> Dashboard {
    let s = format!("namespace=\"{}\"", cfg.namespace);
    Dashboard {
        uid: "mxstack-valkey",
        title: "Valkey",
        rows: vec![row(
            "Instances",
            vec![
                p(
                    "Role",
                    format!("sum by (pod, role) (redis_instance_info{{{s}}})"),
                    "short",
                    "{{pod}} {{role}}",
                ),
                p(
                    "Memory used",
                    format!("sum by (pod) (redis_memory_used_bytes{{{s}}})"),
                    "bytes",
                    "{{pod}}",
                ),
                p(
                    "Clients",
                    format!("sum by (pod) (redis_connected_clients{{{s}}})"),
                    "short",
                    "{{pod}}",
                ),
                p(
                    "Commands per second",
                    format!("sum by (pod) (rate(redis_commands_processed_total{{{s}}}[5m]))"),
                    "short",
                    "{{pod}}",
                ),
                p(
                    "Connected replicas",
                    format!("max by (pod) (redis_connected_slaves{{{s}}})"),
                    "short",
                    "{{pod}}",
                ),
            ],
        )],
    }
}

fn router(cfg: &Config) -> Dashboard {
    let s = format!("namespace=\"{}\"", cfg.namespace);
    Dashboard {
        uid: "mxstack-router",
        title: "Router (HAProxy)",
        rows: vec![row(
            "Backends (route families)",
            vec![
                p("Requests per backend", format!("sum by (proxy) (rate(haproxy_backend_http_requests_total{{{s}}}[5m]))"), "reqps", "{{proxy}}"),
                p("5xx responses per backend", format!("sum by (proxy) (rate(haproxy_backend_http_responses_total{{{s}, code=\"5xx\"}}[5m]))"), "reqps", "{{proxy}}"),
                p("Average response time", format!("max by (proxy) (haproxy_backend_response_time_average_seconds{{{s}}})"), "s", "{{proxy}}"),
                p("Queued requests", format!("sum by (proxy) (haproxy_backend_current_queue{{{s}}})"), "short", "{{proxy}}"),
                p("Healthy servers", format!("sum by (proxy) (haproxy_backend_active_servers{{{s}}})"), "short", "{{proxy}}"),
            ],
        )],
    }
}

/// The media store's S3 traffic (SeaweedFS) and the content scanner (antivirus).
fn media(cfg: &Config) -> Dashboard {
    let s = format!("namespace=\"{}\"", cfg.namespace);
    let mut rows = Vec::new();
    if cfg.media.backend == mxstack_spec::MediaBackend::Seaweedfs {
        rows.push(row(
            "Media store (S3)",
            vec![
                p("S3 requests by code", format!("sum by (code) (rate(SeaweedFS_s3_request_total{{{s}}}[5m]))"), "reqps", "{{code}}"),
                p("S3 p95 latency", format!("histogram_quantile(0.95, sum by (le, type) (rate(SeaweedFS_s3_request_seconds_bucket{{{s}}}[5m])))"), "s", "{{type}}"),
            ],
        ));
    }
    if cfg.has(Feature::Antivirus) {
        rows.push(row(
            "Content scanner",
            vec![
                p("Requests", format!("sum(rate(mxstack_scanner_requests_total{{{s}}}[5m]))"), "reqps", "requests"),
                p("Verdicts", format!("sum by (verdict) (mxstack_scanner_verdicts_total{{{s}}})"), "short", "{{verdict}}"),
                p("Scan time p95", format!("histogram_quantile(0.95, sum by (le) (rate(mxstack_scanner_scan_seconds_bucket{{{s}}}[5m])))"), "s", "p95"),
                p("clamd reachable", format!("min(mxstack_scanner_clamd_up{{{s}}})"), "short", "clamd"),
                p("Bytes scanned", format!("sum(mxstack_scanner_scanned_bytes_total{{{s}}})"), "bytes", "bytes"),
            ],
        ));
    }
    Dashboard {
        uid: "mxstack-media",
        title: "Media and antivirus",
        rows,
    }
}

fn li(cfg: &Config) -> Dashboard {
    let s = format!("namespace=\"{}\"", cfg.namespace);
    Dashboard {
        uid: "mxstack-li",
        title: "Lawful intercept",
        rows: vec![row(
            "Replica, history, media and console",
            vec![
                p(
                    "Replica lag",
                    format!("max(mxstack_li_lag_seconds{{{s}}})"),
                    "s",
                    "lag",
                ),
                p(
                    "History rows",
                    format!("sum(mxstack_li_history_rows{{{s}}})"),
                    "short",
                    "rows",
                ),
                p(
                    "Media backlog",
                    format!("max(mxstack_li_media_backlog_objects{{{s}}})"),
                    "short",
                    "objects",
                ),
                p(
                    "Media copied",
                    format!("sum(mxstack_li_media_copied_total{{{s}}})"),
                    "short",
                    "objects",
                ),
                p(
                    "Console audit entries",
                    format!("max(mxstack_li_console_audit_entries{{{s}}})"),
                    "short",
                    "entries",
                ),
                p(
                    "Console logins refused",
                    format!("sum(mxstack_li_console_logins_refused_total{{{s}}})"),
                    "short",
                    "refused",
                ),
            ],
        )],
    }
}

/// Grafana's dashboard JSON (schema 39): a collapsed-free row per [`Row`], panels two to a line.
pub fn grafana_json(d: &Dashboard) -> Value {
    let mut panels = Vec::new();
    let mut y = 0;
    let mut id = 1;
    for r in &d.rows {
        panels.push(
            json!({"id": id, "type": "row", "title": r.title, "collapsed": false,
                           "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []}),
        );
        id += 1;
        y += 1;
        for (i, panel) in r.panels.iter().enumerate() {
            panels.push(json!({
                "id": id, "type": "timeseries", "title": panel.title,
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
                "gridPos": {"h": 8, "w": 12, "x": (i % 2) * 12, "y": y + (i / 2) as i64 * 8},
                "targets": [{"refId": "A", "expr": panel.expr, "legendFormat": panel.legend}],
            }));
            id += 1;
        }
        y += r.panels.len().div_ceil(2) as i64 * 8;
    }
    json!({
        "uid": d.uid, "title": d.title, "tags": ["mxstack"], "schemaVersion": 39,
        "time": {"from": "now-6h", "to": "now"}, "refresh": "30s", "editable": false,
        "templating": {"list": [{"name": "datasource", "type": "datasource", "query": "prometheus",
                                  "label": "Prometheus"}]},
        "panels": panels,
    })
}

/// (object, "dashboard D panel P", query) of every panel of the dashboard ConfigMaps among
/// rendered `objects`: what MX-OUT-021 checks.
pub fn rendered_queries(objects: &[Value]) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for o in objects {
        if o["kind"] != "ConfigMap"
            || o.pointer(&format!("/metadata/labels/{SIDECAR_LABEL}"))
                .is_none()
        {
            continue;
        }
        let on = format!(
            "ConfigMap/{}",
            o["metadata"]["name"].as_str().unwrap_or("?")
        );
        for text in o["data"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(_, v)| v.as_str())
        {
            let Ok(d) = serde_json::from_str::<Value>(text) else {
                continue;
            };
            for panel in d["panels"].as_array().into_iter().flatten() {
                for target in panel["targets"].as_array().into_iter().flatten() {
                    if let Some(expr) = target["expr"].as_str() {
                        let what = format!(
                            "dashboard {} panel {}",
                            d["title"].as_str().unwrap_or("?"),
                            panel["title"].as_str().unwrap_or("?")
                        );
                        out.push((on.clone(), what, expr.to_string()));
                    }
                }
            }
        }
    }
    out
}
