//! The stand-in controller: the status an object reports when it is read.

use serde_json::{json, Value};

/// How an object's status evolves.
#[derive(Debug, Clone, PartialEq)]
pub enum Behaviour {
    /// Ready as soon as it exists (the default for applied objects).
    Ready,
    /// Not ready for the first `n` reads, ready afterwards.
    ReadyAfterReads(u32),
    /// Always this status (e.g. a condition that never becomes true).
    Stuck(Value),
}

/// `o` with the status its kind reports under `b` on the `reads`-th read.
pub(crate) fn observe(mut o: Value, b: Option<&Behaviour>, reads: u32) -> Value {
    let ready = match b {
        // A seeded object keeps the status it was given.
        None if o.get("status").is_some() => return o,
        None | Some(Behaviour::Ready) => true,
        Some(Behaviour::ReadyAfterReads(n)) => reads > *n,
        Some(Behaviour::Stuck(s)) => {
            o["status"] = s.clone();
            return o;
        }
    };
    if let Some(s) = status(&o, ready) {
        o["status"] = s;
    }
    o
}

fn status(o: &Value, ready: bool) -> Option<Value> {
    let generation = o["metadata"]["generation"].as_u64().unwrap_or(1);
    let replicas = o["spec"]["replicas"].as_u64().unwrap_or(1);
    let instances = o["spec"]["instances"].as_u64().unwrap_or(1);
    let up = if ready { replicas } else { 0 };
    let cond = |t: &str, ok: bool, reason: &str, message: &str| {
        json!([{"type": t, "status": if ok { "True" } else { "False" }, "reason": reason, "message": message,
                "lastTransitionTime": "2026-12-05T12:00:00Z"}])
    };
    let s = match o["kind"].as_str()? {
        "Deployment" => json!({
            "observedGeneration": generation, "replicas": replicas, "updatedReplicas": replicas,
            "readyReplicas": up, "availableReplicas": up,
            "conditions": if ready {
                cond("Available", true, "MinimumReplicasAvailable", "Deployment has minimum availability.")
            } else {
                cond("Available", false, "MinimumReplicasUnavailable", "Deployment does not have minimum availability.")
            },
        }),
        "StatefulSet" => json!({
            "observedGeneration": generation, "replicas": replicas, "readyReplicas": up,
            "availableReplicas": up, "currentReplicas": replicas, "updatedReplicas": replicas,
            "currentRevision": "r1", "updateRevision": "r1",
        }),
        "DaemonSet" => json!({
            "observedGeneration": generation, "desiredNumberScheduled": 1, "updatedNumberScheduled": 1,
            "numberReady": u64::from(ready), "numberAvailable": u64::from(ready),
        }),
        "Job" if ready => json!({"succeeded": 1, "conditions": cond("Complete", true, "", "")}),
        "Job" => json!({"active": 1}),
        "Cluster" => json!({
            "instances": instances, "readyInstances": if ready { instances } else { 0 },
            "phase": if ready { "Cluster in healthy state" } else { "Setting up primary" },
            "conditions": if ready {
                cond("Ready", true, "ClusterIsReady", "Cluster is Ready")
            } else {
                cond("Ready", false, "ClusterIsNotReady", "Cluster Is Not Ready")
            },
        }),
        "Certificate" => json!({"conditions": if ready {
            cond("Ready", true, "Ready", "Certificate is up to date and has not expired")
        } else {
            cond("Ready", false, "DoesNotExist", "Issuing certificate as Secret does not exist")
        }}),
        "CustomResourceDefinition" => {
            json!({"conditions": cond("Established", ready, "InitialNamesAccepted", "the initial names have been accepted")})
        }
        "Namespace" => json!({"phase": "Active"}),
        _ => return None,
    };
    Some(s)
}
