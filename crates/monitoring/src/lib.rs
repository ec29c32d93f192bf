//! Monitoring from the model, the same on every target: the alerts (with their promtool unit
//! tests), the exporters' metric catalog that every expression is checked against, the Grafana
//! dashboards, and the labels every target's scrape gives a series.
//!
//! The Kubernetes target renders these into a PrometheusRule and dashboard ConfigMaps; `mxstack
//! up` loads the same rule group into its own Prometheus, whose static targets carry the labels
//! prometheus-operator would give them (`namespace`, `service`, `pod`), so one expression works
//! on both.

pub mod alerts;
mod alerts_more;
pub mod catalog;
pub mod dashboards;
pub mod docs;
pub mod promql;

use std::collections::BTreeSet;

use mxstack_spec::Config;
use mxstack_topology::registry::{self as reg, Component, Selector};
use serde_json::{json, Value};

pub use catalog::{Exporter, Source, EXPORTERS};

/// The rule group's name, on both targets.
pub const RULE_GROUP: &str = "mxstack";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("{what}: `{expr}` is not valid PromQL: {message}. Fix the expression (check it with `promtool check rules`)")]
    Parse {
        what: String,
        expr: String,
        message: String,
    },
    #[error("{what} uses the metric `{metric}`, which no exporter of this deployment exposes. Use a metric of crates/monitoring/src/catalog.rs, or declare the exporter that exposes it there (and turn on the feature that renders it)")]
    UnknownMetric { what: String, metric: String },
}

/// The `service` label of a component's targets: its Service's name (prometheus-operator's
/// convention), which the local Prometheus copies.
pub fn service_label(c: &Component) -> &'static str {
    if c.id == reg::synapse::COMPONENT.id {
        reg::synapse::METRICS_SERVICE
    } else {
        c.name()
    }
}

/// The ServiceMonitor's or PodMonitor's name of a scraped component (a CloudNativePG
/// cluster's is the cluster's).
pub fn monitor_name(c: &Component) -> &'static str {
    match c.selector {
        Selector::CnpgCluster(cluster) => cluster,
        _ => c.name(),
    }
}

/// Whether an exporter exists where `scraped` says which components are scraped.
pub fn exporter_present(e: &Exporter, scraped: &dyn Fn(&Component) -> bool) -> bool {
    match e.source {
        Source::Prometheus | Source::Platform(_) => true,
        Source::Components(parties) => reg::ALL
            .iter()
            .any(|c| parties.contains(&c.id) && scraped(c)),
    }
}

/// The metrics of the exporters a config renders (every scraped component whose feature is
/// on, Prometheus and the platform's).
pub fn exposed(cfg: &Config) -> BTreeSet<String> {
    catalog::exposed(|e| rendered(cfg, e))
}

/// Whether a config renders `e` (or the platform brings it).
pub fn rendered(cfg: &Config, e: &Exporter) -> bool {
    let scraped = |c: &Component| c.scrape.is_some() && c.feature.is_none_or(|f| cfg.has(f));
    exporter_present(e, &scraped)
}

/// Every problem of `exprs` (what, expression) against the metrics `exposed`.
pub fn check<'a>(
    exprs: impl IntoIterator<Item = (String, &'a str)>,
    exposed: &BTreeSet<String>,
) -> Vec<Error> {
    let mut errors = Vec::new();
    for (what, expr) in exprs {
        match promql::metric_names(expr) {
            Err(message) => errors.push(Error::Parse {
                what,
                expr: expr.to_string(),
                message,
            }),
            Ok(names) => errors.extend(names.into_iter().filter(|n| !exposed.contains(n)).map(
                |metric| Error::UnknownMetric {
                    what: what.clone(),
                    metric,
                },
            )),
        }
    }
    errors
}

/// The rule group every target loads: `groups[0]` of a PrometheusRule's spec, or of a
/// Prometheus rule file.
pub fn rule_group(cfg: &Config) -> Value {
    let rules: Vec<Value> = alerts::alerts(cfg)
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
    json!({ "name": RULE_GROUP, "rules": rules })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mxstack_spec::{Feature, Tier};

    fn config(features: &[Feature]) -> Config {
        Config::new("example.org", Tier::T1k, features.iter().copied().collect())
    }

    #[test]
    fn backup_age_alert_follows_the_schedule() {
        use crate::alerts_more::backup_interval_seconds as every;
        const H: u64 = 3600;
        assert_eq!(every("0 0 2 * * *"), 24 * H, "the default: daily");
        assert_eq!(every("0 0 */6 * * *"), 6 * H);
        assert_eq!(every("0 0 2,14 * * *"), 12 * H);
        assert_eq!(
            every("0 0 1,5 * * *"),
            20 * H,
            "the longest gap wraps round midnight"
        );
        assert_eq!(every("0 30 * * * *"), H);
        assert_eq!(every("0 0 3 * * 0"), 7 * 24 * H, "weekly");
        assert_eq!(every("0 0 3 * * 1,4"), 4 * 24 * H);
        assert_eq!(every("0 0 3 1 * *"), 31 * 24 * H, "monthly");
        assert_eq!(every("nonsense"), 24 * H);
        let mut c = config(&[Feature::Monitoring]);
        c.backup.schedule = "0 0 */6 * * *".into();
        let a = alerts::alerts(&c)
            .into_iter()
            .find(|a| a.name == "PostgresBackupTooOld")
            .unwrap();
        assert!(a.expr.ends_with("> 43200"), "{}", a.expr);
        assert!(a.summary.contains("`0 0 */6 * * *`: 12 h"), "{}", a.summary);
    }

    #[test]
    fn every_shipped_alert_uses_only_exposed_metrics() {
        for features in [&Feature::ALL[..], &[Feature::Monitoring][..]] {
            let c = config(features);
            let exprs = alerts::alerts(&c)
                .into_iter()
                .map(|a| (a.name.to_string(), a.expr));
            let exprs: Vec<(String, String)> = exprs.collect();
            let errors = check(
                exprs.iter().map(|(w, e)| (w.clone(), e.as_str())),
                &exposed(&c),
            );
            assert!(errors.is_empty(), "{errors:#?}");
        }
    }

    #[test]
    fn an_unknown_metric_or_a_metric_of_an_absent_exporter_is_refused() {
        let only = config(&[Feature::Monitoring]);
        let errors = check(
            [
                (
                    "typo".to_string(),
                    "sum(rate(synapse_http_server_requests_recieved_total[5m]))",
                ),
                ("li off".to_string(), "mxstack_li_lag_seconds > 5"),
                ("fine".to_string(), "up == 0"),
                ("broken".to_string(), "sum(up"),
            ],
            &exposed(&only),
        );
        let whats: Vec<&str> = errors
            .iter()
            .map(|e| match e {
                Error::UnknownMetric { what, .. } | Error::Parse { what, .. } => what.as_str(),
            })
            .collect();
        assert_eq!(whats, ["typo", "li off", "broken"], "{errors:#?}");
        assert!(errors[0]
            .to_string()
            .contains("synapse_http_server_requests_recieved_total"));
        // With li on, the LI metrics exist.
        let li = config(&[Feature::Monitoring, Feature::Li]);
        assert!(check(
            [("li on".to_string(), "mxstack_li_lag_seconds > 5")],
            &exposed(&li)
        )
        .is_empty());
    }

    #[test]
    fn every_dashboard_panel_uses_only_exposed_metrics_and_rows_follow_the_groups() {
        for features in [&Feature::ALL[..], &[Feature::Monitoring][..]] {
            let c = config(features);
            let t = mxstack_topology::Topology::build(&c);
            let ds = dashboards::dashboards(&t);
            let exprs: Vec<(String, String)> = ds
                .iter()
                .flat_map(|d| {
                    d.panels()
                        .map(|p| (format!("{} {}", d.title, p.title), p.expr.clone()))
                })
                .collect();
            let errors = check(
                exprs.iter().map(|(w, e)| (w.clone(), e.as_str())),
                &exposed(&c),
            );
            assert!(errors.is_empty(), "{errors:#?}");
            let synapse = &ds[0];
            let rows: Vec<&str> = synapse.rows.iter().map(|r| r.title.as_str()).collect();
            for g in &t.groups {
                assert!(
                    rows.contains(&g.name.as_str()),
                    "no row for group {} in {rows:?}",
                    g.name
                );
            }
            assert_eq!(ds.iter().any(|d| d.uid == "mxstack-li"), c.has(Feature::Li));
        }
    }

    #[test]
    fn cnpg_query_metrics_come_from_the_vendored_queries() {
        let m = catalog::cnpg_query_metrics();
        for name in [
            "cnpg_pg_replication_lag",
            "cnpg_backends_total",
            "cnpg_pg_settings_setting",
            "cnpg_pg_stat_archiver_failed_count",
            "cnpg_pg_database_size_bytes",
        ] {
            assert!(m.contains(name), "{name} missing from {m:?}");
        }
        // LABEL columns are labels, not metrics.
        assert!(!m.contains("cnpg_backends_datname"));
    }

    #[test]
    fn the_vendored_queries_are_cloudnative_pgs() {
        // Held to the release manifest we vendor, so an operator upgrade cannot leave them behind.
        let release = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../k8s/vendor/operators/cloudnative-pg/1.30.0/releases/cnpg-1.30.0.yaml"
        ))
        .unwrap();
        let cm = release
            .split("\n---\n")
            .find(|d| d.contains("name: cnpg-default-monitoring") && d.contains("kind: ConfigMap"))
            .expect("the default monitoring ConfigMap");
        let cm: Value = serde_saphyr::from_str(cm).unwrap();
        let vendored: String = catalog::CNPG_DEFAULT_QUERIES
            .lines()
            .skip_while(|l| l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(cm["data"]["queries"].as_str().unwrap(), vendored);
    }
}
