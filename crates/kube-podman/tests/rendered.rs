//! The run-proof's translation of what `mxstack render` writes for a 100-user site with
//! antivirus and li: every pod of the application layer translates, nothing it does not map
//! slips through, and no secret reaches a command line.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use mxstack_kube_podman::proof::APPLICATION_WAVES;
use mxstack_kube_podman::translate::{self, Options};
use mxstack_kube_podman::{Cluster, Error};
use mxstack_spec::{Config, Feature, Secrets, Tier};
use mxstack_topology::Topology;
use serde_json::Value;

fn rendered() -> (Vec<Value>, Secrets) {
    let c = Config::new(
        "run-proof.test",
        Tier::T100,
        [Feature::Antivirus, Feature::Li].into(),
    );
    // Air-gapped signatures, as the run-proof's site has them.
    let mut c = c;
    c.antivirus.signature_updates = false;
    let secrets = Secrets::generate_all().unwrap();
    let r = mxstack_k8s::render(&Topology::build(&c), &secrets);
    (r.objects.into_iter().map(|o| o.value).collect(), secrets)
}

fn options() -> Options {
    Options {
        network: "mxstack-run-proof".into(),
        dns: Ipv4Addr::new(10, 89, 7, 2),
        host_ip: Ipv4Addr::new(10, 89, 7, 1),
        work: "/var/tmp/run-proof".into(),
        prefix: "rp-".into(),
        images: BTreeMap::new(),
        nofile: 1024,
    }
}

#[test]
fn every_application_pod_translates_and_secrets_stay_off_command_lines() {
    let (objects, secrets) = rendered();
    let mut cluster = Cluster::from_objects("matrix", &objects).unwrap();
    // The Secrets CloudNativePG creates (the stand-in does, in a proof).
    for pg in mxstack_kube_podman::cnpg_standin::clusters(&objects) {
        if let Some((name, data)) = pg.superuser_secret("superuser-password-of-the-test") {
            cluster.secrets.insert(name, data);
        }
    }
    let app: Vec<&str> = APPLICATION_WAVES
        .iter()
        .flat_map(|w| w.iter().copied())
        .collect();
    let pods = cluster.pods(Ipv4Addr::new(10, 89, 7, 10), |w| {
        app.contains(&w.name.as_str())
    });
    let names: Vec<&str> = pods.iter().map(|p| p.workload.name.as_str()).collect();
    for a in &app {
        assert!(names.contains(a), "{a} is rendered");
    }
    cluster.check_service_ports(&pods).unwrap();
    let dns = cluster.dns(&pods);
    assert!(dns.contains_key("synapse-main.matrix.svc.cluster.local"));
    assert!(dns.contains_key("synapse-generic-0.synapse-generic.matrix.svc.cluster.local"));
    assert!(dns.contains_key("content-scanner.matrix.svc.cluster.local"));
    let values: Vec<String> = mxstack_spec::SecretName::ALL
        .iter()
        .map(|n| secrets.get(*n).to_string())
        .filter(|v| v.len() >= 8)
        .collect();
    for p in &pods {
        let run = translate::pod(&cluster, p, &options()).unwrap_or_else(|e| panic!("{e}"));
        assert!(!run.containers.is_empty());
        for c in run.init.iter().chain(&run.containers) {
            let line = c.args.join(" ");
            for v in &values {
                assert!(
                    !line.contains(v.as_str()),
                    "{}: a secret on its command line",
                    c.name
                );
            }
            assert!(line.contains("--pull=never"));
            assert!(c.non_root, "{}: runAsNonRoot", c.name);
        }
        // Every secret file is group-readable by the pod's fsGroup and nobody else.
        for h in run.host_paths.iter().filter(|h| h.content.is_some()) {
            assert_eq!(h.mode & 0o002, 0, "{}: world-writable", h.path.display());
        }
    }
    // Synapse main: its config is mounted read-only and its env names the database password
    // from the one Secret (seed 004 issue 1.1).
    let main = pods.iter().find(|p| p.name == "synapse-main-0").unwrap();
    let run = translate::pod(&cluster, main, &options()).unwrap();
    let c = &run.containers[0];
    assert!(c
        .args
        .iter()
        .any(|a| a.starts_with("--volume=") && a.ends_with(":ro")));
    assert!(c.args.contains(&"--read-only".to_string()));
    assert!(c.readiness.is_some() && c.liveness.is_some());
}

#[test]
fn a_field_it_does_not_map_is_refused() {
    let (mut objects, _) = rendered();
    let sts = objects
        .iter_mut()
        .find(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == "key-vault")
        .unwrap();
    sts["spec"]["template"]["spec"]["hostNetwork"] = Value::Bool(true);
    let cluster = Cluster::from_objects("matrix", &objects).unwrap();
    let pods = cluster.pods(Ipv4Addr::new(10, 89, 7, 10), |w| w.name == "key-vault");
    match translate::pod(&cluster, &pods[0], &options()) {
        Err(Error::Unmapped { field, .. }) => assert_eq!(field, "pod.hostNetwork"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_reference_to_a_missing_secret_key_is_an_error() {
    let (mut objects, _) = rendered();
    for o in objects.iter_mut().filter(|o| o["kind"] == "Secret") {
        if let Some(m) = o["stringData"].as_object_mut() {
            m.remove("store_api_key");
        }
    }
    let cluster = Cluster::from_objects("matrix", &objects).unwrap();
    let pods = cluster.pods(Ipv4Addr::new(10, 89, 7, 10), |w| w.name == "key-vault");
    let e = translate::pod(&cluster, &pods[0], &options()).unwrap_err();
    assert!(matches!(e, Error::MissingKey { .. }), "{e}");
}
