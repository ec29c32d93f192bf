//! Issue 21: every rendered alert is proven by promtool (Debian's prometheus package): the rules
//! pass `promtool check rules`, and `promtool test rules` runs each alert's own unit test: it fires,
//! with the labels it declares, on series of a failing system, and stays silent on a healthy one.
//! An alert without its test cannot be declared (`alerts::Alert` carries it), and a rendered
//! alert that is not among the declared ones fails here.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use mxstack_monitoring::alerts::{alerts, Alert, Series};
use mxstack_spec::{Feature, Tier};
use serde_json::{json, Value};

fn promtool() -> PathBuf {
    ["/usr/bin/promtool", "/usr/local/bin/promtool"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("promtool is missing: run scripts/setup.sh (Debian package prometheus)")
}

fn series(list: &[Series]) -> Value {
    list.iter()
        .map(|s| json!({"series": s.series, "values": s.values}))
        .collect()
}

/// A promtool test group: `input` for an hour, evaluated at 60m, expecting `expect`.
fn group(a: &Alert, input: &[Series], expect: Value) -> Value {
    json!({
        "interval": "1m",
        "input_series": series(input),
        "alert_rule_test": [{"eval_time": "60m", "alertname": a.name, "exp_alerts": expect}],
    })
}

fn tests_for(a: &Alert) -> Vec<Value> {
    let mut labels = json!({"severity": a.severity});
    for (k, v) in &a.fires_with {
        labels[*k] = json!(v);
    }
    let fired = json!([{
        "exp_labels": labels,
        "exp_annotations": {"summary": a.summary, "description": a.fix},
    }]);
    vec![group(a, &a.firing, fired), group(a, &a.healthy, json!([]))]
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

fn write_yaml(path: &Path, v: &Value) {
    std::fs::write(path, serde_saphyr::to_string(v).unwrap()).unwrap();
}

#[test]
fn every_alert_passes_promtool_and_its_own_unit_test() {
    let c = config(Tier::T1k, &Feature::ALL);
    let (r, _) = render(&c);
    let rule = objects(&r, "PrometheusRule")
        .next()
        .expect("PrometheusRule");
    let dir = tempfile::tempdir().unwrap();
    write_yaml(&dir.path().join("rules.yaml"), &rule["spec"]);
    run(Command::new(promtool())
        .args(["check", "rules"])
        .arg(dir.path().join("rules.yaml")));

    let declared = alerts(&c);
    let rendered: BTreeSet<&str> = rule["spec"]["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["alert"].as_str().unwrap())
        .collect();
    let names: BTreeSet<&str> = declared.iter().map(|a| a.name).collect();
    assert_eq!(
        rendered, names,
        "every rendered alert is a declared one, with its test"
    );
    assert!(names.len() >= 21, "{names:?}");
    for a in &declared {
        assert!(
            !a.firing.is_empty() && !a.healthy.is_empty(),
            "{}: a test needs series for both cases",
            a.name
        );
        assert!(!a.fix.is_empty(), "{}: no description", a.name);
    }
    let tests: Vec<Value> = declared.iter().flat_map(tests_for).collect();
    write_yaml(
        &dir.path().join("tests.yaml"),
        &json!({"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": tests}),
    );
    run(Command::new(promtool())
        .args(["test", "rules"])
        .arg(dir.path().join("tests.yaml")));
}

#[test]
fn a_broken_alert_fails_its_unit_test() {
    // The harness itself: an alert whose firing series are those of a healthy system must fail.
    let c = config(Tier::T1k, &Feature::ALL);
    let (r, _) = render(&c);
    let rule = objects(&r, "PrometheusRule").next().unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_yaml(&dir.path().join("rules.yaml"), &rule["spec"]);
    let mut a = alerts(&c).remove(0);
    a.firing = a.healthy.clone();
    write_yaml(
        &dir.path().join("tests.yaml"),
        &json!({"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": tests_for(&a)}),
    );
    let out = Command::new(promtool())
        .args(["test", "rules"])
        .arg(dir.path().join("tests.yaml"))
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "promtool passed a test that must fail"
    );
}

fn out_021(objects: &[Value]) -> Vec<String> {
    mxstack_checks::rendered::check(objects, None)
        .into_iter()
        .filter(|f| f.rule == "MX-OUT-021")
        .map(|f| f.message)
        .collect()
}

#[test]
fn an_alert_or_panel_on_a_metric_no_rendered_exporter_exposes_is_refused() {
    let (r, _) = render(&config(Tier::T1k, &Feature::ALL));
    let mut objects: Vec<Value> = r.objects.iter().map(|o| o.value.clone()).collect();
    assert_eq!(
        out_021(&objects),
        Vec::<String>::new(),
        "the shipped render is clean"
    );

    // A typo in an alert.
    let rule = objects
        .iter_mut()
        .find(|o| o["kind"] == "PrometheusRule")
        .unwrap();
    rule["spec"]["groups"][0]["rules"][0]["expr"] = json!("synapse_http_requests_totl > 1");
    let found = out_021(&objects);
    assert!(
        found.len() == 1 && found[0].contains("synapse_http_requests_totl"),
        "{found:?}"
    );

    // Without Valkey's PodMonitor, its exporter is not rendered: every Valkey alert and panel
    // names a metric nobody exposes.
    let (r, _) = render(&config(Tier::T1k, &Feature::ALL));
    let objects: Vec<Value> = r
        .objects
        .iter()
        .map(|o| o.value.clone())
        .filter(|o| !(o["kind"] == "PodMonitor" && o["metadata"]["name"] == "valkey"))
        .collect();
    let found = out_021(&objects);
    assert!(
        found.iter().any(|m| m.contains("alert ValkeyNoMaster")),
        "{found:#?}"
    );
    assert!(
        found
            .iter()
            .any(|m| m.contains("dashboard Valkey panel Memory used")),
        "{found:#?}"
    );
    assert!(found.iter().all(|m| m.contains("redis_")), "{found:#?}");
}

#[test]
fn dashboards_are_configmaps_for_the_grafana_sidecar_generated_per_worker_group() {
    let c = config(Tier::T10k, &Feature::ALL);
    let (r, _) = render(&c);
    let maps: Vec<&Value> = objects(&r, "ConfigMap")
        .filter(|o| o["metadata"]["labels"]["grafana_dashboard"] == "1")
        .collect();
    let names: BTreeSet<&str> = maps
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap())
        .collect();
    for d in [
        "mxstack-synapse",
        "mxstack-postgres",
        "mxstack-valkey",
        "mxstack-router",
        "mxstack-media",
        "mxstack-li",
    ] {
        assert!(names.contains(d), "{d} missing: {names:?}");
    }
    let synapse = maps
        .iter()
        .find(|o| o["metadata"]["name"] == "mxstack-synapse")
        .unwrap();
    let json: Value =
        serde_json::from_str(synapse["data"]["mxstack-synapse.json"].as_str().unwrap()).unwrap();
    let rows: Vec<&str> = json["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["type"] == "row")
        .map(|p| p["title"].as_str().unwrap())
        .collect();
    let t = mxstack_topology::Topology::build(&c);
    for g in &t.groups {
        assert!(
            rows.contains(&g.name.as_str()),
            "no row for {}: {rows:?}",
            g.name
        );
    }
    // Without li there is no LI dashboard.
    let (r, _) = render(&config(Tier::T1k, &[Feature::Monitoring]));
    assert!(objects(&r, "ConfigMap").all(|o| o["metadata"]["name"] != "mxstack-li"));
}
