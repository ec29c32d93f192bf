//! What "ready" means per kind, and waiting for it with a diagnosis when it does not come.

use std::time::{Duration, Instant};

use kube::api::ListParams;
use serde_json::Value;

use crate::{Cluster, Error, Item};

/// Where an object stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// Not yet, and why (the condition or counters that say so).
    Waiting(String),
    /// Will not become ready by waiting (a failed Job).
    Failed(String),
}

/// Whether deploy waits for objects of this kind before the next phase.
pub fn waited(api_version: &str, kind: &str) -> bool {
    matches!(
        (api_version, kind),
        ("apps/v1", "Deployment" | "StatefulSet" | "DaemonSet")
            | ("batch/v1", "Job")
            | ("postgresql.cnpg.io/v1", "Cluster")
            | ("cert-manager.io/v1", "Certificate")
            | ("apiextensions.k8s.io/v1", "CustomResourceDefinition")
    )
}

/// The readiness of a live object of a [`waited`] kind.
pub fn readiness(o: &Value) -> Readiness {
    let s = &o["status"];
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let generation = n(&o["metadata"]["generation"]);
    let observed = || {
        (n(&s["observedGeneration"]) >= generation)
            .then_some(())
            .ok_or_else(|| format!("the controller has not seen generation {generation} yet"))
    };
    let result = match o["kind"].as_str().unwrap_or_default() {
        "Deployment" => observed().and_then(|_| {
            let want = o["spec"]["replicas"].as_u64().unwrap_or(1);
            let (updated, available) = (n(&s["updatedReplicas"]), n(&s["availableReplicas"]));
            (updated >= want && available >= want)
                .then_some(())
                .ok_or_else(|| {
                    format!(
                        "{available}/{want} available, {updated}/{want} updated{}",
                        condition_text(s, "Available")
                    )
                })
        }),
        "StatefulSet" => observed().and_then(|_| {
            let want = o["spec"]["replicas"].as_u64().unwrap_or(1);
            let ready = n(&s["readyReplicas"]);
            let rolled = s["updateRevision"] == s["currentRevision"];
            (ready >= want && rolled).then_some(()).ok_or_else(|| {
                format!(
                    "{ready}/{want} ready{}",
                    if rolled { "" } else { ", rolling out" }
                )
            })
        }),
        "DaemonSet" => observed().and_then(|_| {
            let want = n(&s["desiredNumberScheduled"]);
            let ready = n(&s["numberReady"]);
            (ready >= want && n(&s["updatedNumberScheduled"]) >= want)
                .then_some(())
                .ok_or_else(|| format!("{ready}/{want} ready"))
        }),
        "Job" => {
            if condition(s, "Failed") == Some(true) {
                return Readiness::Failed(format!("the Job failed{}", condition_text(s, "Failed")));
            }
            (condition(s, "Complete") == Some(true))
                .then_some(())
                .ok_or_else(|| {
                    format!(
                        "{} active, {} succeeded",
                        n(&s["active"]),
                        n(&s["succeeded"])
                    )
                })
        }
        "CustomResourceDefinition" => ready_condition(s, "Established"),
        // CloudNativePG Cluster, cert-manager Certificate: a Ready condition.
        _ => ready_condition(s, "Ready"),
    };
    match result {
        Ok(()) => Readiness::Ready,
        Err(why) => Readiness::Waiting(why),
    }
}

fn ready_condition(s: &Value, kind: &str) -> Result<(), String> {
    match condition(s, kind) {
        Some(true) => Ok(()),
        Some(false) => Err(condition_text(s, kind).trim_start_matches(", ").to_string()),
        None => Err(format!("no {kind} condition yet{}", phase_text(s))),
    }
}

fn phase_text(s: &Value) -> String {
    s["phase"]
        .as_str()
        .map(|p| format!(" (phase: {p})"))
        .unwrap_or_default()
}

fn find_condition<'a>(s: &'a Value, kind: &str) -> Option<&'a Value> {
    s["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

fn condition(s: &Value, kind: &str) -> Option<bool> {
    find_condition(s, kind).map(|c| c["status"] == "True")
}

/// ", Ready=False ClusterIsNotReady: Cluster Is Not Ready", or "" without that condition.
fn condition_text(s: &Value, kind: &str) -> String {
    let Some(c) = find_condition(s, kind) else {
        return String::new();
    };
    let get = |f: &str| c[f].as_str().unwrap_or_default().to_string();
    let mut t = format!(", {kind}={} {}", get("status"), get("reason"));
    let m = get("message");
    if !m.is_empty() {
        t.push_str(&format!(": {m}"));
    }
    t.trim_end().to_string()
}

/// How long to wait and how often to look.
#[derive(Debug, Clone, Copy)]
pub struct WaitOptions {
    pub timeout: Duration,
    pub poll: Duration,
    /// How often a still-waiting object is reported.
    pub report_every: Duration,
}

/// Waits until `item` is ready; `progress` hears (why, elapsed) now and then while it waits.
pub async fn wait(
    cluster: &Cluster,
    item: &Item,
    opts: WaitOptions,
    progress: &mut dyn FnMut(&str, Duration),
) -> Result<Duration, Error> {
    let served = cluster.require(&item.api_version, &item.kind).await?;
    let api = cluster.api_for(&served, item.namespace.as_deref());
    let start = Instant::now();
    let mut last_report: Option<(Instant, String)> = None;
    loop {
        let live = api
            .get(&item.name)
            .await
            .map_err(|e| cluster.error(&served, &item.id(), "get", e))?;
        let live = serde_json::to_value(live).expect("objects serialize");
        let why = match readiness(&live) {
            Readiness::Ready => return Ok(start.elapsed()),
            Readiness::Failed(m) => {
                return Err(Error::Failed {
                    object: item.id(),
                    message: format!("{m}{}", events_text(&events(cluster, item).await)),
                })
            }
            Readiness::Waiting(why) => why,
        };
        if start.elapsed() >= opts.timeout {
            return Err(Error::Timeout {
                object: item.id(),
                waited: start.elapsed(),
                last: why,
                events: events(cluster, item).await,
            });
        }
        let due = last_report
            .as_ref()
            .is_none_or(|(t, w)| *w != why || t.elapsed() >= opts.report_every);
        if due {
            progress(&why, start.elapsed());
            last_report = Some((Instant::now(), why));
        }
        tokio::time::sleep(opts.poll).await;
    }
}

fn events_text(e: &[String]) -> String {
    if e.is_empty() {
        String::new()
    } else {
        format!("; events: {}", e.join(" | "))
    }
}

/// The object's most recent events, "Reason: message" (best effort: none when they cannot be read).
pub async fn events(cluster: &Cluster, item: &Item) -> Vec<String> {
    let Ok(Some(served)) = cluster.served("v1", "Event").await else {
        return Vec::new();
    };
    let api = cluster.api_for(&served, item.namespace.as_deref());
    let fields = format!(
        "involvedObject.name={},involvedObject.kind={}",
        item.name, item.kind
    );
    let Ok(list) = api.list(&ListParams::default().fields(&fields)).await else {
        return Vec::new();
    };
    let mut out: Vec<(String, String)> = list
        .items
        .into_iter()
        .map(|e| {
            let v = serde_json::to_value(e).expect("events serialize");
            let when = v["lastTimestamp"]
                .as_str()
                .or(v["eventTime"].as_str())
                .unwrap_or_default()
                .to_string();
            let text = format!(
                "{}: {}",
                v["reason"].as_str().unwrap_or_default(),
                v["message"].as_str().unwrap_or_default()
            );
            (when, text)
        })
        .collect();
    out.sort();
    out.into_iter().rev().take(5).map(|(_, t)| t).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_deployment_is_ready_when_the_new_generation_is_available() {
        let mut d = json!({"kind": "Deployment", "metadata": {"generation": 2}, "spec": {"replicas": 2},
            "status": {"observedGeneration": 1, "updatedReplicas": 2, "availableReplicas": 2}});
        assert!(matches!(readiness(&d), Readiness::Waiting(w) if w.contains("generation 2")));
        d["status"]["observedGeneration"] = json!(2);
        d["status"]["availableReplicas"] = json!(1);
        assert_eq!(
            readiness(&d),
            Readiness::Waiting("1/2 available, 2/2 updated".into())
        );
        d["status"]["availableReplicas"] = json!(2);
        assert_eq!(readiness(&d), Readiness::Ready);
    }

    #[test]
    fn a_condition_decides_for_clusters_certificates_and_jobs() {
        let c = |t: &str, s: &str| json!({"conditions": [{"type": t, "status": s, "reason": "R", "message": "m"}]});
        let pg = |s: Value| json!({"kind": "Cluster", "status": s});
        assert_eq!(readiness(&pg(c("Ready", "True"))), Readiness::Ready);
        assert_eq!(
            readiness(&pg(c("Ready", "False"))),
            Readiness::Waiting("Ready=False R: m".into())
        );
        assert!(
            matches!(readiness(&pg(json!({"phase": "Setting up primary"}))), Readiness::Waiting(w) if w.contains("Setting up primary"))
        );
        let job = |s: Value| json!({"kind": "Job", "status": s});
        assert_eq!(readiness(&job(c("Complete", "True"))), Readiness::Ready);
        assert!(matches!(
            readiness(&job(c("Failed", "True"))),
            Readiness::Failed(_)
        ));
    }
}
