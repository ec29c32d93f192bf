//! The log pipeline (feature `monitoring`; docs/LOGS.md): Loki and Alloy exist only with
//! monitoring, retention follows the config, the LI audit stream only with li, and the
//! NetworkPolicies of both admit exactly their declared flows.

mod common;

use std::collections::BTreeSet;

use common::*;
use mxstack_spec::{Feature, Tier};
use mxstack_topology::flows::{flows, Party};
use mxstack_topology::registry as reg;
use mxstack_topology::Topology;
use serde_json::Value;

const LOG_KINDS: [(&str, &str); 8] = [
    ("ConfigMap", "loki-config"),
    ("Service", "loki"),
    ("StatefulSet", "loki"),
    ("ConfigMap", "alloy-config"),
    ("ServiceAccount", "alloy"),
    ("Role", "alloy"),
    ("RoleBinding", "alloy"),
    ("DaemonSet", "alloy"),
];

fn loki_config(r: &mxstack_k8s::Rendered) -> Value {
    let cm = find(r, "ConfigMap", "loki-config").expect("loki-config");
    serde_saphyr::from_str(cm["data"]["loki.yaml"].as_str().unwrap()).unwrap()
}

fn alloy_config(r: &mxstack_k8s::Rendered) -> String {
    let cm = find(r, "ConfigMap", "alloy-config").expect("alloy-config");
    cm["data"]["config.alloy"].as_str().unwrap().to_string()
}

#[test]
fn loki_and_alloy_exist_only_with_monitoring() {
    for features in feature_sets() {
        let (r, _) = render(&config(
            Tier::T1k,
            &features.iter().copied().collect::<Vec<_>>(),
        ));
        let on = features.contains(&Feature::Monitoring);
        for (k, n) in LOG_KINDS {
            assert_eq!(find(&r, k, n).is_some(), on, "{k}/{n} with {features:?}");
        }
        let files: Vec<&String> = r.files.keys().collect();
        let in_monitoring = ["60-monitoring/loki.yaml", "60-monitoring/alloy.yaml"];
        for f in in_monitoring {
            assert_eq!(files.iter().any(|x| *x == f), on, "{f}");
        }
    }
}

#[test]
fn retention_follows_the_config_and_the_compactor_applies_it() {
    for (days, audit_days) in [(30, 3650), (7, 2555), (1, 1)] {
        let mut c = config(Tier::T1k, &[Feature::Monitoring, Feature::Li]);
        c.monitoring.log_retention_days = days.try_into().unwrap();
        c.li.audit_log_retention_days = audit_days.try_into().unwrap();
        let (r, _) = render(&c);
        let loki = loki_config(&r);
        let limits = &loki["limits_config"];
        assert_eq!(limits["retention_period"], format!("{}h", days * 24));
        assert_eq!(loki["compactor"]["retention_enabled"], true);
        assert!(loki["compactor"]["delete_request_store"].is_string());
        // Retention needs the 24h index period.
        assert_eq!(
            loki["schema_config"]["configs"][0]["index"]["period"],
            "24h"
        );
        let rules = limits["retention_stream"].as_array().unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0]["period"], format!("{}h", audit_days * 24));
    }
}

#[test]
fn the_li_audit_stream_exists_only_with_li_and_alloy_labels_what_its_selector_matches() {
    let (r, _) = render(&config(Tier::T1k, &[Feature::Monitoring]));
    assert!(loki_config(&r)["limits_config"]
        .get("retention_stream")
        .is_none());
    assert!(!alloy_config(&r).contains("stage.match"));

    let (r, _) = render(&config(Tier::T1k, &[Feature::Monitoring, Feature::Li]));
    let loki = loki_config(&r);
    let rule = &loki["limits_config"]["retention_stream"][0];
    // The default audit retention outlasts the default log retention.
    let hours = |v: &Value| {
        v.as_str()
            .unwrap()
            .trim_end_matches('h')
            .parse::<u64>()
            .unwrap()
    };
    assert!(hours(&rule["period"]) > hours(&loki["limits_config"]["retention_period"]));
    // The selector names one label; Alloy sets exactly that label, on the console's lines that
    // carry the anchor key the console prints.
    let selector = rule["selector"].as_str().unwrap();
    let (label, value) = selector
        .trim_matches(|c| c == '{' || c == '}')
        .split_once('=')
        .unwrap();
    let value = value.trim_matches('"');
    assert_eq!(value, reg::li_console::COMPONENT.name());
    let alloy = alloy_config(&r);
    assert!(
        alloy.contains(&format!("values = {{ {label} = \"{value}\" }}")),
        "{alloy}"
    );
    let anchor = mxstack_service_config::li_console::AUDIT_ANCHOR_KEY;
    assert!(
        alloy.contains(&format!("{{app=\\\"{value}\\\"}} |= `\\\"{anchor}\\\":`")),
        "{alloy}"
    );
    // The app label it matches on is the pods' app.kubernetes.io/name.
    assert!(alloy.contains("__meta_kubernetes_pod_label_app_kubernetes_io_name"));
}

#[test]
fn alloy_labels_namespace_pod_container_and_app_and_pushes_to_the_loki_service() {
    let mut c = config(Tier::T1k, &[Feature::Monitoring]);
    c.namespace = "acme-chat".into();
    let (r, _) = render(&c);
    let alloy = alloy_config(&r);
    for label in ["namespace", "pod", "container", "app"] {
        assert!(
            alloy.contains(&format!("target_label  = \"{label}\"")),
            "{label}"
        );
    }
    assert!(alloy.contains("names = [\"acme-chat\"]"), "{alloy}");
    assert!(alloy.contains("spec.nodeName=") && alloy.contains("sys.env(\"NODE_NAME\")"));
    let svc = find(&r, "Service", "loki").unwrap();
    let url = format!(
        "http://{}.acme-chat.svc.cluster.local:{}/loki/api/v1/push",
        name(svc),
        svc["spec"]["ports"][0]["port"]
    );
    assert!(alloy.contains(&url), "{alloy}");
    // NODE_NAME is the pod's node (the discovery's field selector).
    let ds = find(&r, "DaemonSet", "alloy").unwrap();
    let env = &ds["spec"]["template"]["spec"]["containers"][0]["env"][0];
    assert_eq!(env["name"], "NODE_NAME");
    assert_eq!(env["valueFrom"]["fieldRef"]["fieldPath"], "spec.nodeName");
}

#[test]
fn alloy_reads_pods_and_their_logs_in_the_namespace_only_and_reaches_li_nodes_with_li() {
    for li in [false, true] {
        let mut features = vec![Feature::Monitoring];
        if li {
            features.push(Feature::Li);
        }
        let (r, _) = render(&config(Tier::T1k, &features));
        let role = find(&r, "Role", "alloy").unwrap();
        let rules: BTreeSet<String> = role["rules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| format!("{} {} {}", x["apiGroups"], x["resources"], x["verbs"]))
            .collect();
        assert_eq!(
            rules,
            BTreeSet::from([
                r#"[""] ["pods"] ["get","list","watch"]"#.to_string(),
                r#"[""] ["pods/log"] ["get"]"#.to_string(),
            ])
        );
        assert!(objects(&r, "ClusterRole").next().is_none());
        let b = find(&r, "RoleBinding", "alloy").unwrap();
        assert_eq!(b["roleRef"]["name"], "alloy");
        assert_eq!(b["subjects"][0]["name"], "alloy");
        let spec = &find(&r, "DaemonSet", "alloy").unwrap()["spec"]["template"]["spec"];
        assert_eq!(spec["serviceAccountName"], "alloy");
        assert_eq!(spec["automountServiceAccountToken"], false);
        let tolerations = spec.get("tolerations").and_then(Value::as_array);
        assert_eq!(tolerations.is_some(), li, "{spec}");
        if li {
            assert_eq!(tolerations.unwrap()[0]["key"], "mxstack.io/role");
        }
    }
}

#[test]
fn loki_runs_once_on_its_own_volume_and_reaches_nothing() {
    let (r, _) = render(&config(Tier::T5k, &[Feature::Monitoring, Feature::Li]));
    let sts = find(&r, "StatefulSet", "loki").unwrap();
    assert_eq!(sts["spec"]["replicas"], 1);
    let claim = &sts["spec"]["volumeClaimTemplates"][0];
    let mounts = &sts["spec"]["template"]["spec"]["containers"][0]["volumeMounts"];
    let data = mounts
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == claim["metadata"]["name"])
        .expect("the claim is mounted");
    assert_eq!(
        loki_config(&r)["common"]["path_prefix"],
        data["mountPath"],
        "Loki keeps everything on the volume"
    );
    let pol = find(&r, "NetworkPolicy", "allow-loki").unwrap();
    assert_eq!(pol["spec"]["egress"], serde_json::json!([]));
}

/// (peer, ports) of every rule of one direction of a policy, as comparable strings.
fn rules(policy: &Value, direction: &str) -> BTreeSet<String> {
    let peers = if direction == "ingress" { "from" } else { "to" };
    policy["spec"][direction]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| format!("{} {}", r[peers], r["ports"]))
        .collect()
}

#[test]
fn loki_and_alloy_policies_admit_exactly_their_flows() {
    let c = config(Tier::T1k, &all_features());
    let (r, _) = render(&c);
    let t = Topology::build(&c);
    let all = flows(&t);
    let ports = |f: &mxstack_topology::flows::Flow| {
        serde_json::to_string(
            &f.ports
                .iter()
                .map(|p| serde_json::json!({ "port": p, "protocol": "TCP" }))
                .collect::<Vec<_>>(),
        )
        .unwrap()
    };
    for party in [Party::Loki, Party::Alloy] {
        let pol = find(&r, "NetworkPolicy", &format!("allow-{}", party.as_str())).unwrap();
        // The policy selects the party's pods, which the workload carries.
        let sel = &pol["spec"]["podSelector"]["matchLabels"];
        assert_eq!(sel["app.kubernetes.io/name"], party.as_str());
        let (kind, n) = match party {
            Party::Loki => ("StatefulSet", "loki"),
            _ => ("DaemonSet", "alloy"),
        };
        let labels = &find(&r, kind, n).unwrap()["spec"]["template"]["metadata"]["labels"];
        assert_eq!(labels["app.kubernetes.io/name"], party.as_str());
        // As many rules as flows, each with the flow's ports.
        let inbound: Vec<_> = all.iter().filter(|f| f.to == party).collect();
        let outbound: Vec<_> = all.iter().filter(|f| f.from == party).collect();
        let got_in = rules(pol, "ingress");
        let got_out = rules(pol, "egress");
        assert_eq!(got_in.len(), inbound.len(), "{party:?} ingress {got_in:?}");
        assert_eq!(
            got_out.len(),
            outbound.len(),
            "{party:?} egress {got_out:?}"
        );
        for f in &inbound {
            assert!(got_in.iter().any(|g| g.ends_with(&ports(f))), "{f:?}");
        }
        for f in &outbound {
            assert!(got_out.iter().any(|g| g.ends_with(&ports(f))), "{f:?}");
        }
        // Every port it admits is one its pods declare (the port rules, MX-OUT-014, hold).
        let declared: Vec<u16> = reg::component(party)
            .unwrap()
            .ports
            .iter()
            .map(|p| p.number)
            .collect();
        for f in &inbound {
            assert!(f.ports.iter().all(|p| declared.contains(p)), "{f:?}");
        }
    }
    // Only Alloy and the working-copy job reach the Kubernetes API.
    let api: BTreeSet<Party> = all
        .iter()
        .filter(|f| f.to == Party::KubernetesApi)
        .map(|f| f.from)
        .collect();
    assert_eq!(api, BTreeSet::from([Party::Alloy, Party::LiWorkingCopy]));
}

#[test]
fn monitoring_scrapes_loki_and_alloy() {
    let (r, _) = render(&config(Tier::T1k, &[Feature::Monitoring]));
    let sm = find(&r, "ServiceMonitor", "loki").expect("ServiceMonitor loki");
    assert_eq!(sm["spec"]["endpoints"][0]["port"], reg::loki::HTTP.name);
    let svc = find(&r, "Service", "loki").unwrap();
    assert_eq!(svc["metadata"]["labels"]["mxstack.io/metrics"], "loki");
    let pm = find(&r, "PodMonitor", "alloy").expect("PodMonitor alloy");
    assert_eq!(
        pm["spec"]["podMetricsEndpoints"][0]["port"],
        reg::alloy::HTTP.name
    );
}

#[test]
fn every_synapse_logs_json_lines() {
    let (r, _) = render(&config(Tier::T1k, &all_features()));
    let logs: Vec<(&str, Value)> = objects(&r, "ConfigMap")
        .filter_map(|cm| {
            let text = cm["data"]["log.yaml"].as_str()?;
            Some((name(cm), serde_saphyr::from_str(text).unwrap()))
        })
        .collect();
    // Main's processes and Synapse LI.
    assert_eq!(logs.len(), 2, "{logs:?}");
    for (n, log) in logs {
        let handler = &log["handlers"]["console"];
        let formatter = handler["formatter"].as_str().unwrap();
        assert_eq!(
            log["formatters"][formatter]["class"],
            mxstack_topology::synapse::LOG_FORMATTER,
            "{n}"
        );
        assert_eq!(log["root"]["handlers"][0], "console", "{n}");
    }
}
