//! Monitoring on one machine (feature `monitoring`): Debian's Prometheus and Alertmanager, with
//! the exporters Kubernetes runs as sidecars (redis_exporter per Valkey, postgres_exporter with
//! CloudNativePG's own queries per PostgreSQL). Prometheus loads the very rule group the
//! PrometheusRule carries, and its static targets carry the labels prometheus-operator would
//! give them (`namespace`, `service`, `pod`), so the same expressions fire here.

use mxstack_spec::{Feature, SecretName};
use mxstack_topology::party::Party;
use mxstack_topology::registry::{self as reg, Component, Scrape, Selector};
use mxstack_topology::Addressing;
use serde_json::{json, Value};

use crate::parts::{file, Out, Parts, Readiness, Service};

/// How often the local Prometheus scrapes and evaluates: short, so that an alert's `for` is
/// what decides how soon it fires.
pub const SCRAPE_INTERVAL_SECS: u64 = 5;

/// One scrape target: the port, and the pod name Kubernetes would give the process.
struct Target {
    port: u16,
    pod: String,
}

/// The pod name a process would have on Kubernetes (alerts name pods, e.g. `synapse-main-0`).
fn pod_name(c: &Component, process: Option<&str>, instance: u32) -> String {
    match (c.selector, process) {
        (Selector::CnpgCluster(cluster), _) => format!("{cluster}-{}", instance + 1),
        (_, Some(p))
            if p.rsplit('-')
                .next()
                .is_some_and(|n| n.parse::<u32>().is_ok()) =>
        {
            p.to_string()
        }
        (_, Some(p)) => format!("{p}-0"),
        _ => format!("{}-{instance}", c.name()),
    }
}

/// Every scraped component that runs here, with its targets and path.
fn jobs(c: &Parts) -> Vec<(&'static Component, &'static str, Vec<Target>)> {
    let mut out = Vec::new();
    for comp in reg::ALL {
        if comp.feature.is_some_and(|f| !c.t.has(f)) {
            continue;
        }
        let (port, path) = match comp.scrape {
            Some(Scrape::Service { port, path }) => (port.name, path),
            Some(Scrape::Pod { port }) => (port, "/metrics"),
            None => continue,
        };
        let running: Vec<String> = c.t.processes().into_iter().map(|p| p.name).collect();
        let targets: Vec<Target> = (0..)
            .map_while(|i| c.addr.port_of(comp.id, port, i).map(|p| (i, p)))
            // A Synapse process `mxstack scale` removed keeps its ports, not its scrape target.
            .filter(|(i, _)| {
                comp.id != Party::Synapse || running.contains(&c.addr.process_order[*i as usize])
            })
            .map(|(i, p)| Target {
                port: p,
                pod: pod_name(
                    comp,
                    (comp.id == Party::Synapse).then(|| c.addr.process_order[i as usize].as_str()),
                    i,
                ),
            })
            .collect();
        if !targets.is_empty() {
            out.push((comp, path, targets));
        }
    }
    out
}

fn prometheus_yml(c: &Parts, rules: &str) -> Value {
    let ns = &c.config.namespace;
    let scrape_configs: Vec<Value> = jobs(c)
        .into_iter()
        .map(|(comp, path, targets)| {
            let service = mxstack_monitoring::service_label(comp);
            json!({
                "job_name": mxstack_monitoring::monitor_name(comp),
                "metrics_path": path,
                "static_configs": targets.iter().map(|t| json!({
                    "targets": [format!("127.0.0.1:{}", t.port)],
                    "labels": {"namespace": ns, "service": service, "pod": t.pod},
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let interval = format!("{SCRAPE_INTERVAL_SECS}s");
    json!({
        "global": {"scrape_interval": interval, "evaluation_interval": interval, "scrape_timeout": "4s"},
        "rule_files": [rules],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [c.addr.alertmanager().to_string()]}]}]},
        "scrape_configs": scrape_configs,
    })
}

/// CloudNativePG's queries under the names CloudNativePG exports them as: postgres_exporter
/// names a column `<query>_<column>`, CloudNativePG `cnpg_<query>_<column>`.
fn cnpg_queries() -> Value {
    let q: Value = serde_saphyr::from_str(mxstack_monitoring::catalog::CNPG_DEFAULT_QUERIES)
        .expect("the vendored queries parse");
    let renamed: serde_json::Map<String, Value> = q
        .as_object()
        .expect("a map of queries")
        .iter()
        .map(|(k, v)| (format!("cnpg_{k}"), v.clone()))
        .collect();
    Value::Object(renamed)
}

pub(crate) fn part(c: &Parts, out: &mut Out) {
    let Some(p) = c.programs.monitoring.as_ref() else {
        return;
    };
    let dir = c.layout.root.join("monitoring");
    let rules = dir.join("rules.yml");
    let prom_yml = dir.join("prometheus.yml");
    let am_yml = dir.join("alertmanager.yml");
    let queries = dir.join("cnpg-queries.yml");
    let rule_file = json!({"groups": [mxstack_monitoring::rule_group(c.config)]});
    out.files
        .push(file(rules.clone(), rule_file.to_string(), 0o644));
    out.files.push(file(
        prom_yml.clone(),
        prometheus_yml(c, &rules.display().to_string()).to_string(),
        0o644,
    ));
    // Alerts are shown by `mxstack status`; nothing is sent anywhere from one machine.
    let am = json!({"route": {"receiver": "none", "group_wait": "5s", "group_interval": "30s"},
                    "receivers": [{"name": "none"}]});
    out.files.push(file(am_yml.clone(), am.to_string(), 0o644));
    out.files.push(file(
        queries.clone(),
        serde_saphyr::to_string(&cnpg_queries()).expect("yaml"),
        0o644,
    ));

    let mut exporters = Vec::new();
    for i in 0..c.t.sizing.redis.instances {
        let port = c
            .addr
            .port_of(Party::Valkey, reg::valkey::EXPORTER.name, i)
            .expect("allocated");
        let name = format!("valkey-exporter-{i}");
        out.services.push(
            Service::process(
                name.clone(),
                p.redis_exporter.clone(),
                vec![
                    format!("--redis.addr=redis://{}", c.addr.redis_instance(i)),
                    format!("--web.listen-address=127.0.0.1:{port}"),
                ],
                Readiness::Tcp { port },
            )
            .env(
                vec![(
                    "REDIS_PASSWORD".into(),
                    c.secrets.get(SecretName::RedisPassword).to_string(),
                )],
                vec!["REDIS_PASSWORD".into()],
            )
            .after(vec![format!("valkey-{i}")]),
        );
        exporters.push(name);
    }
    let mut pgs = vec![(Party::Postgres, "postgres", c.addr.postgres())];
    if c.t.has(Feature::Li) {
        pgs.push((Party::LiPostgres, "postgres-li", c.addr.li_postgres()));
    }
    for (party, server, pg) in pgs {
        let port = c
            .addr
            .port_of(party, reg::cnpg::METRICS.name, 0)
            .expect("allocated");
        let name = format!("{server}-exporter");
        let dsn = format!(
            "host={} port={} user=postgres dbname=postgres sslmode=disable",
            c.layout.sockets().display(),
            pg.port
        );
        out.services.push(
            Service::process(
                name.clone(),
                p.postgres_exporter.clone(),
                vec![
                    format!("--web.listen-address=127.0.0.1:{port}"),
                    format!("--extend.query-path={}", queries.display()),
                    "--disable-default-metrics".into(),
                    "--disable-settings-metrics".into(),
                ],
                Readiness::Tcp { port },
            )
            .env(vec![("DATA_SOURCE_NAME".into(), dsn)], vec![])
            .run_as("postgres")
            .after(vec![server.into()]),
        );
        exporters.push(name);
    }
    let am = c.addr.alertmanager();
    out.services.push(
        Service::process(
            "alertmanager".into(),
            p.alertmanager.clone(),
            vec![
                format!("--config.file={}", am_yml.display()),
                format!("--storage.path={}", dir.join("alertmanager").display()),
                format!("--web.listen-address={am}"),
                // No HA peers: the default would also listen on :9094 of every address.
                "--cluster.listen-address=".into(),
            ],
            Readiness::Http {
                port: am.port,
                path: "/-/ready".into(),
            },
        )
        .shown_port(am.port),
    );
    let prom = c.addr.prometheus();
    out.services.push(
        Service::process(
            "prometheus".into(),
            p.prometheus.clone(),
            vec![
                format!("--config.file={}", prom_yml.display()),
                format!("--storage.tsdb.path={}", dir.join("prometheus").display()),
                format!("--web.listen-address={prom}"),
                "--storage.tsdb.retention.time=7d".into(),
            ],
            Readiness::Http {
                port: prom.port,
                path: "/-/ready".into(),
            },
        )
        .shown_port(prom.port)
        .reloads_on(libc::SIGHUP)
        // After the router, which waits for every Synapse process: no alert on a process that
        // is still starting.
        .after(
            ["alertmanager".to_string(), "router".to_string()]
                .into_iter()
                .chain(exporters)
                .collect(),
        ),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_are_named_as_on_kubernetes() {
        assert_eq!(
            pod_name(&reg::synapse::COMPONENT, Some("synapse-main"), 0),
            "synapse-main-0"
        );
        assert_eq!(
            pod_name(&reg::synapse::COMPONENT, Some("synapse-generic-1"), 2),
            "synapse-generic-1"
        );
        assert_eq!(pod_name(&reg::postgres::COMPONENT, None, 0), "main-pg-1");
        assert_eq!(pod_name(&reg::valkey::COMPONENT, None, 2), "valkey-2");
    }

    #[test]
    fn queries_are_renamed_to_cloudnative_pgs_metric_names() {
        let q = cnpg_queries();
        assert!(q.get("cnpg_backends").is_some() && q.get("backends").is_none());
    }
}
