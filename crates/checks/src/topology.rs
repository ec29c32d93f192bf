//! Rules on the derived model and the Synapse configuration generated from it. They re-read the
//! generated homeserver.yaml, so a generator bug that made two lists disagree is caught here.

use mxstack_spec::Feature;
use mxstack_topology::budget::BUDGET_SHARE_PERCENT;
use mxstack_topology::workers::{Stream, WorkerKind};
use mxstack_topology::{antivirus, routing, synapse, Addressing, Topology};
use serde_json::Value;

use crate::Finding;

/// `addr`: the target's addresses (the lists checked here do not depend on them).
pub fn check(t: &Topology, addr: &dyn Addressing) -> Vec<Finding> {
    let hs = synapse::homeserver_yaml(t, addr);
    let mut out = check_homeserver(t, &hs);
    out.extend(check_antivirus(t, &routing::routes(t), &hs));
    out
}

/// Seed 004 issue 2.10: the scanner was deployed and nothing sent media through it. With the
/// antivirus feature, every download and thumbnail path must reach the scanner and every upload
/// must pass the upload module.
pub fn check_antivirus(t: &Topology, routes: &[routing::Route], hs: &Value) -> Vec<Finding> {
    let mut out = Vec::new();
    if !t.has(Feature::Antivirus) {
        return out;
    }
    let mut paths = vec![
        "/_matrix/client/v1/media/download/d/m",
        "/_matrix/client/v1/media/thumbnail/d/m",
        "/_matrix/media/v3/download/d/m",
        "/_matrix/media/r0/download/d/m",
        "/_matrix/media/v3/thumbnail/d/m",
    ];
    if t.has(Feature::Federation) {
        paths.push("/_matrix/federation/v1/media/download/m");
    }
    for path in paths {
        let backend = routing::pick(routes, "GET", path).map(|r| r.backend.as_str());
        if backend != Some(routing::CONTENT_SCANNER_BACKEND) {
            out.push(Finding::new(
                "MX-TOP-008",
                format!(
                    "GET {path} goes to {} instead of the content scanner",
                    backend.unwrap_or("main")
                ),
            ));
        }
    }
    let has_module = hs
        .get("modules")
        .and_then(Value::as_array)
        .is_some_and(|m| {
            m.iter()
                .any(|x| x.get("module").and_then(Value::as_str) == Some(antivirus::UPLOAD_MODULE))
        });
    if !has_module {
        out.push(Finding::new(
            "MX-TOP-008",
            format!("homeserver.yaml does not load {}", antivirus::UPLOAD_MODULE),
        ));
    }
    out
}

fn names(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_owned))
            .collect(),
        _ => vec![],
    }
}

pub fn check_homeserver(t: &Topology, hs: &Value) -> Vec<Finding> {
    let mut out = Vec::new();
    let b = &t.budget;
    let limit = b.max_connections * BUDGET_SHARE_PERCENT / 100;
    if b.total_cp_max > limit {
        out.push(Finding::new(
            "MX-TOP-001",
            format!(
                "sum of cp_max over all processes is {} but 85% of max_connections {} is {limit}",
                b.total_cp_max, b.max_connections
            ),
        ));
    }

    let processes: Vec<String> = t
        .processes()
        .iter()
        .map(|p| p.instance_name().to_string())
        .collect();
    let instance_map = hs
        .get("instance_map")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if !instance_map.contains_key("main") {
        out.push(Finding::new(
            "MX-TOP-002",
            "instance_map has no entry for main",
        ));
    }
    let writers = hs
        .get("stream_writers")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for s in Stream::ALL {
        let w = writers
            .get(s.key())
            .map(names)
            .unwrap_or_else(|| vec!["main".into()]);
        if s.single_writer() && w.len() != 1 {
            out.push(Finding::new(
                "MX-TOP-002",
                format!(
                    "stream {} has {} writers; Synapse allows one",
                    s.key(),
                    w.len()
                ),
            ));
        }
        for name in &w {
            if name != "main" && !instance_map.contains_key(name) {
                out.push(Finding::new(
                    "MX-TOP-002",
                    format!("{name} writes {} but is not in instance_map", s.key()),
                ));
            }
            if !processes.contains(name) {
                out.push(Finding::new(
                    "MX-TOP-007",
                    format!(
                        "stream {} is written by {name}, which does not exist",
                        s.key()
                    ),
                ));
            }
        }
    }
    let expected = |kind: WorkerKind| -> Vec<String> {
        t.groups_of(kind)
            .flat_map(|g| (0..g.max_replicas).map(move |i| g.process_name(i)))
            .collect()
    };
    let senders = hs
        .get("federation_sender_instances")
        .map(names)
        .unwrap_or_default();
    if senders != expected(WorkerKind::FederationSender) {
        out.push(Finding::new(
            "MX-TOP-003",
            format!(
                "federation_sender_instances {senders:?} but federation-sender workers are {:?}",
                expected(WorkerKind::FederationSender)
            ),
        ));
    }
    let pushers = hs.get("pusher_instances").map(names).unwrap_or_default();
    if pushers != expected(WorkerKind::Pusher) {
        out.push(Finding::new(
            "MX-TOP-007",
            format!("pusher_instances {pushers:?} disagree with the pusher workers"),
        ));
    }
    let media = expected(WorkerKind::MediaRepository);
    if !media.is_empty() {
        if hs.get("enable_media_repo") != Some(&Value::Bool(false)) {
            out.push(Finding::new(
                "MX-TOP-004",
                "main serves media although media workers exist",
            ));
        }
        let bg = hs
            .get("media_instance_running_background_jobs")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !media.iter().any(|m| m == bg) {
            out.push(Finding::new(
                "MX-TOP-004",
                format!("media_instance_running_background_jobs is `{bg}`, not a media worker"),
            ));
        }
    }
    for key in [
        "run_background_tasks_on",
        "update_user_directory_from_worker",
        "notify_appservices_from_worker",
    ] {
        if let Some(name) = hs.get(key).and_then(Value::as_str) {
            if !processes.iter().any(|p| p == name) {
                out.push(Finding::new(
                    "MX-TOP-007",
                    format!("{key} names {name}, which does not exist"),
                ));
            }
        }
    }
    for g in &t.groups {
        if g.max_replicas > g.replicas && !g.kind.autoscalable() {
            out.push(Finding::new(
                "MX-CFG-007",
                format!("group {} would autoscale", g.name),
            ));
        }
        let stateless = matches!(
            g.kind,
            WorkerKind::Synchrotron | WorkerKind::Generic | WorkerKind::MediaRepository
        );
        if stateless && g.replicas < 2 {
            out.push(Finding::new(
                "MX-TOP-005",
                format!("{} runs {} replica(s)", g.name, g.replicas),
            ));
        }
    }
    if t.sizing.haproxy_replicas < 2 {
        out.push(Finding::new(
            "MX-TOP-005",
            format!("the router runs {} replica(s)", t.sizing.haproxy_replicas),
        ));
    }
    if t.sizing.redis.instances < 3 || t.sizing.redis.sentinel_quorum < 2 {
        out.push(Finding::new(
            "MX-TOP-006",
            format!(
                "{} Valkey instances, quorum {}",
                t.sizing.redis.instances, t.sizing.redis.sentinel_quorum
            ),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use mxstack_spec::{default_features, Config, Feature, Tier};

    #[test]
    fn every_tier_is_clean() {
        for tier in Tier::ALL {
            for features in [default_features(), Feature::ALL.into_iter().collect()] {
                let t = Topology::build(&Config::new("acme.test", tier, features));
                let f = check(&t, &mxstack_k8s::KubernetesAddressing::new(&t.config));
                assert!(f.is_empty(), "{tier}: {f:?}");
            }
        }
    }

    #[test]
    fn detects_disagreeing_lists() {
        let t = Topology::build(&Config::new(
            "acme.test",
            Tier::T1k,
            Feature::ALL.into_iter().collect(),
        ));
        let addr = mxstack_k8s::KubernetesAddressing::new(&t.config);
        let mut hs = synapse::homeserver_yaml(&t, &addr);
        // The seed's defect: event persisters deployed, events still written by main, a sender missing.
        hs["stream_writers"]["typing"] = serde_json::json!(["synapse-stream-writer-0", "main"]);
        hs["federation_sender_instances"] = serde_json::json!(["synapse-federation-sender-0"]);
        hs["enable_media_repo"] = serde_json::json!(true);
        hs["instance_map"]
            .as_object_mut()
            .unwrap()
            .remove("synapse-event-persister-1");
        let ids: Vec<_> = check_homeserver(&t, &hs).iter().map(|f| f.rule).collect();
        for id in ["MX-TOP-002", "MX-TOP-003", "MX-TOP-004"] {
            assert!(ids.contains(&id), "{id} missing from {ids:?}");
        }
    }

    #[test]
    fn detects_media_that_bypasses_the_scanner() {
        let t = Topology::build(&Config::new(
            "acme.test",
            Tier::T1k,
            Feature::ALL.into_iter().collect(),
        ));
        let addr = mxstack_k8s::KubernetesAddressing::new(&t.config);
        let hs = synapse::homeserver_yaml(&t, &addr);
        let routes = routing::routes(&t);
        assert!(check_antivirus(&t, &routes, &hs).is_empty());
        // The seed's defect: a scanner exists, but downloads go straight to the media workers
        // and uploads are not scanned.
        let bypass: Vec<_> = routes
            .iter()
            .filter(|r| r.backend != routing::CONTENT_SCANNER_BACKEND)
            .cloned()
            .collect();
        let mut no_module = hs.clone();
        no_module.as_object_mut().unwrap().remove("modules");
        let f = check_antivirus(&t, &bypass, &no_module);
        assert!(f.len() >= 6, "{f:?}");
        assert!(f.iter().all(|f| f.rule == "MX-TOP-008"));
    }
}
