//! Issue 19: every built-in object of every render (all tiers, feature sets, edge modes and
//! media backends) goes through its k8s-openapi type and back without losing or changing a
//! field. A field k8s-openapi does not know is a field the API server would drop (or refuse,
//! with strict field validation) on apply; `deploy` would then report a change on every run.

mod common;

use std::collections::BTreeSet;

use common::*;
use k8s_openapi::api::{apps, autoscaling, batch, core, networking, policy, rbac};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

fn roundtrip<T: DeserializeOwned + Serialize>(v: &Value) -> Result<Value, String> {
    let t: T = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
    serde_json::to_value(&t).map_err(|e| e.to_string())
}

/// The object through its type, or None for a kind k8s-openapi has no type for (custom kinds).
fn through_type(v: &Value) -> Option<Result<Value, String>> {
    let key = (v["apiVersion"].as_str()?, v["kind"].as_str()?);
    Some(match key {
        ("v1", "Namespace") => roundtrip::<core::v1::Namespace>(v),
        ("v1", "Secret") => roundtrip::<core::v1::Secret>(v),
        ("v1", "ConfigMap") => roundtrip::<core::v1::ConfigMap>(v),
        ("v1", "Service") => roundtrip::<core::v1::Service>(v),
        ("v1", "ServiceAccount") => roundtrip::<core::v1::ServiceAccount>(v),
        ("v1", "PersistentVolumeClaim") => roundtrip::<core::v1::PersistentVolumeClaim>(v),
        ("apps/v1", "Deployment") => roundtrip::<apps::v1::Deployment>(v),
        ("apps/v1", "StatefulSet") => roundtrip::<apps::v1::StatefulSet>(v),
        ("apps/v1", "DaemonSet") => roundtrip::<apps::v1::DaemonSet>(v),
        ("batch/v1", "Job") => roundtrip::<batch::v1::Job>(v),
        ("batch/v1", "CronJob") => roundtrip::<batch::v1::CronJob>(v),
        ("policy/v1", "PodDisruptionBudget") => roundtrip::<policy::v1::PodDisruptionBudget>(v),
        ("autoscaling/v2", "HorizontalPodAutoscaler") => {
            roundtrip::<autoscaling::v2::HorizontalPodAutoscaler>(v)
        }
        ("networking.k8s.io/v1", "NetworkPolicy") => roundtrip::<networking::v1::NetworkPolicy>(v),
        ("networking.k8s.io/v1", "Ingress") => roundtrip::<networking::v1::Ingress>(v),
        ("rbac.authorization.k8s.io/v1", "Role") => roundtrip::<rbac::v1::Role>(v),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => roundtrip::<rbac::v1::RoleBinding>(v),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => roundtrip::<rbac::v1::ClusterRole>(v),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            roundtrip::<rbac::v1::ClusterRoleBinding>(v)
        }
        _ => return None,
    })
}

/// JSON paths where `a` and `b` differ.
fn differences(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for k in x.keys().chain(y.keys()).collect::<BTreeSet<_>>() {
                let p = format!("{path}.{k}");
                match (x.get(k), y.get(k)) {
                    (Some(v), Some(w)) => differences(&p, v, w, out),
                    (Some(_), None) => out.push(format!("{p} lost")),
                    (None, Some(_)) => out.push(format!("{p} added")),
                    (None, None) => {}
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (n, (v, w)) in x.iter().zip(y).enumerate() {
                differences(&format!("{path}[{n}]"), v, w, out);
            }
        }
        _ if a != b => out.push(format!("{path}: {a} became {b}")),
        _ => {}
    }
}

#[test]
fn every_built_in_object_of_every_render_round_trips_through_its_k8s_openapi_type() {
    let mut typed = BTreeSet::new();
    let mut checked = 0;
    for c in &matrix() {
        let (r, _) = render(c);
        for o in &r.objects {
            let v = &o.value;
            let id = format!("{} {}/{}", v["apiVersion"], kind(v), name(v));
            let api = v["apiVersion"].as_str().unwrap_or_default();
            let Some(back) = through_type(v) else {
                assert!(
                    !mxstack_k8s::prerequisites::BUILT_IN.contains(&api),
                    "{id}: a built-in kind this test has no type for; add it to through_type"
                );
                continue;
            };
            let back = back.unwrap_or_else(|e| panic!("{id} does not parse as its type: {e}"));
            let mut diff = Vec::new();
            differences("", v, &back, &mut diff);
            assert!(
                diff.is_empty(),
                "{id} changed through k8s-openapi:\n{}",
                diff.join("\n")
            );
            typed.insert(kind(v).to_string());
            checked += 1;
        }
    }
    // The kinds render emits today; a kind that stops appearing makes this fail on purpose,
    // so the list stays true.
    for k in [
        "Namespace",
        "Secret",
        "ConfigMap",
        "Service",
        "Deployment",
        "StatefulSet",
        "Job",
        "PodDisruptionBudget",
        "NetworkPolicy",
    ] {
        assert!(
            typed.contains(k),
            "no {k} was checked; rendered kinds: {typed:?}"
        );
    }
    assert!(checked > 1000, "{checked} objects checked");
}
