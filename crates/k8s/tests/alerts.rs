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
use mxstack_k8s::alerts::{alerts, Alert, Series};
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
