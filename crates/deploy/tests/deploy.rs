//! `mxstack deploy` with the real kube-rs client against MockApiServer (the one mock mxstack
//! allows: no API server runs here): phase order, waits, a timeout's diagnosis, conflicts,
//! prune, idempotency, dry run, and refused permissions.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use mxstack_deploy::apply::Change;
use mxstack_deploy::prune::{applyset_id, LABEL_PART_OF};
use mxstack_deploy::{deploy, Error, Event, Item, Stopped, Summary};
use mxstack_kube_mock::{Behaviour, MockApiServer};
use mxstack_spec::{Feature, Tier};
use serde_json::{json, Value};

fn run(
    server: &MockApiServer,
    items: &[Item],
    opts: mxstack_deploy::Options,
) -> (Result<Summary, Stopped>, Vec<Event>) {
    let rt = runtime();
    let (_dir, cluster) = connect(&rt, server);
    let mut events = Vec::new();
    let r = rt.block_on(deploy(&cluster, items, HOME, opts, &mut |e| events.push(e)));
    (r, events)
}

fn first<'a>(items: &'a [Item], kind: &str, phase: &str) -> &'a Item {
    items
        .iter()
        .find(|i| i.kind == kind && i.phase == phase)
        .unwrap_or_else(|| panic!("a {kind} in {phase}"))
}

/// The URL path of an object, as kube-rs requests it.
fn path_of(server_items: &Item, plural: &str) -> String {
    let prefix = match server_items.api_version.split_once('/') {
        Some(_) => format!("/apis/{}", server_items.api_version),
        None => format!("/api/{}", server_items.api_version),
    };
    match &server_items.namespace {
        Some(ns) => format!("{prefix}/namespaces/{ns}/{plural}/{}", server_items.name),
        None => format!("{prefix}/{plural}/{}", server_items.name),
    }
}

#[test]
fn phases_apply_in_order_and_each_waits_for_what_the_next_needs() {
    let server = server();
    let items = items(
        &config(Tier::T1k, &[Feature::Li, Feature::Antivirus]),
        &secrets(),
    );
    let db = first(&items, "Cluster", "10-infrastructure");
    server.behave("Cluster", &db.name, Behaviour::ReadyAfterReads(3));
    let (r, events) = run(&server, &items, options());
    let summary = r.expect("deploy succeeds");
    assert_eq!(summary.created, items.len());
    assert_eq!(
        summary.phases.first().map(String::as_str),
        Some("00-namespace")
    );

    // Phases are applied in render's order, each object once.
    let applied: Vec<(String, String)> = events
        .iter()
        .filter_map(|e| match e {
            Event::Applied { phase, object, .. } => Some((phase.clone(), object.clone())),
            _ => None,
        })
        .collect();
    let want: Vec<(String, String)> = items.iter().map(|i| (i.phase.clone(), i.id())).collect();
    assert_eq!(applied, want);

    // The database was read until ready (3 pending reads + 1), and all of that happened
    // before the first object of the next phase was applied.
    let log = server.log();
    let db_path = path_of(db, "clusters");
    let db_reads: Vec<usize> = log
        .iter()
        .enumerate()
        .filter(|(_, r)| r.method == "GET" && r.path == db_path)
        .map(|(n, _)| n)
        .collect();
    assert!(
        db_reads.len() >= 4,
        "the Cluster was polled until Ready: {} reads",
        db_reads.len()
    );
    let main = first(&items, "Deployment", "20-main");
    let first_main_apply = log
        .iter()
        .position(|r| r.is_apply() && r.path == path_of(main, "deployments"))
        .expect("synapse main applied");
    assert!(
        db_reads.last().unwrap() < &first_main_apply,
        "20-main waited for the database"
    );
    let waits = events
        .iter()
        .filter(|e| matches!(e, Event::Waiting { object, .. } if *object == db.id()))
        .count();
    assert!(waits >= 1, "the wait was reported while it lasted");
    // Every applied object carries this instance's ApplySet label.
    let stored = server.get("Deployment", Some(HOME), &main.name).unwrap();
    assert_eq!(
        stored["metadata"]["labels"][LABEL_PART_OF],
        json!(applyset_id(HOME))
    );
}

#[test]
fn a_second_deploy_changes_nothing_and_says_so() {
    let server = server();
    let items = items(&config(Tier::T100, &Feature::ALL), &secrets());
    run(&server, &items, options()).0.expect("first deploy");
    let versions = |s: &MockApiServer| -> Vec<(String, Value)> {
        s.objects()
            .iter()
            .map(|o| {
                (
                    o["metadata"]["name"].to_string(),
                    o["metadata"]["resourceVersion"].clone(),
                )
            })
            .collect()
    };
    let before = versions(&server);
    let (r, _) = run(&server, &items, options());
    let s = r.expect("second deploy");
    assert!(!s.changed(), "{s:?}");
    assert_eq!((s.created, s.configured, s.unchanged), (0, 0, items.len()));
    assert_eq!(versions(&server), before, "no object was written again");
}

#[test]
fn a_wait_that_times_out_names_the_object_its_condition_and_events_and_stops_there() {
    let server = server();
    let items = items(&config(Tier::T100, &[]), &secrets());
    let main = first(&items, "Deployment", "20-main");
    server.behave(
        "Deployment",
        &main.name,
        Behaviour::Stuck(json!({"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 0,
            "conditions": [{"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable",
                            "message": "Deployment does not have minimum availability."}]})),
    );
    server.event(
        HOME,
        "Deployment",
        &main.name,
        "FailedCreate",
        "pods \"x\" is forbidden: exceeded quota",
    );
    let mut opts = options();
    opts.wait.timeout = Duration::from_millis(300);
    let (r, _) = run(&server, &items, opts);
    let stopped = r.expect_err("the wait times out");
    assert_eq!(stopped.phase, "20-main");
    assert_eq!(stopped.object.as_deref(), Some(main.id().as_str()));
    assert!(stopped.done.contains(&"10-infrastructure".to_string()));
    let text = stopped.to_string();
    let want_available = format!(
        "0/{} available",
        main.value["spec"]["replicas"].as_u64().unwrap_or(1)
    );
    for want in [
        want_available.as_str(),
        "MinimumReplicasUnavailable",
        "exceeded quota",
        "stopped in phase 20-main",
        "run the same `mxstack deploy` again",
    ] {
        assert!(text.contains(want), "{want:?} missing from: {text}");
    }
    assert!(matches!(stopped.error, Error::Timeout { .. }));
    // Nothing of a later phase was applied.
    let later: Vec<&Item> = items
        .iter()
        .filter(|i| i.phase.as_str() > "20-main")
        .collect();
    assert!(!later.is_empty());
    for i in later {
        assert!(
            server
                .get(&i.kind, i.namespace.as_deref(), &i.name)
                .is_none(),
            "{} applied after the stop",
            i.id()
        );
    }
}

#[test]
fn a_field_another_manager_owns_is_a_conflict_until_forced() {
    let server = server();
    let items = items(&config(Tier::T100, &[]), &secrets());
    let d = items
        .iter()
        .find(|i| i.kind == "Deployment" && i.value["spec"]["replicas"].is_number())
        .expect("a Deployment with replicas");
    let mut theirs = d.value.clone();
    theirs["spec"]["replicas"] = json!(7);
    server.seed(theirs);
    server.claim("Deployment", &d.name, "kubectl-edit", "/spec/replicas");
    let (r, _) = run(&server, &items, options());
    let stopped = r.expect_err("conflict");
    let text = stopped.to_string();
    assert!(matches!(stopped.error, Error::Conflict { .. }), "{text}");
    assert!(
        text.contains("kubectl-edit")
            && text.contains(".spec.replicas")
            && text.contains("--force-conflicts"),
        "{text}"
    );
    assert_eq!(
        server.get("Deployment", Some(HOME), &d.name).unwrap()["spec"]["replicas"],
        json!(7)
    );

    let mut opts = options();
    opts.force_conflicts = true;
    run(&server, &items, opts).0.expect("forced");
    assert_eq!(
        server.get("Deployment", Some(HOME), &d.name).unwrap()["spec"]["replicas"],
        d.value["spec"]["replicas"]
    );
}

fn ids(server: &MockApiServer) -> BTreeSet<(String, String)> {
    server
        .objects()
        .iter()
        .map(|o| {
            (
                o["kind"].as_str().unwrap().to_string(),
                o["metadata"]["name"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn prune_deletes_exactly_what_left_the_render_and_only_this_instances_objects() {
    let server = server();
    let s = secrets();
    let with = items(&config(Tier::T100, &[Feature::Monitoring, Feature::Li]), &s);
    let without = items(&config(Tier::T100, &[Feature::Li]), &s);
    run(&server, &with, options()).0.expect("first deploy");
    // Objects that are not this instance's, or not mxstack's: prune must never touch them.
    let labels = |part_of: &str, managed: bool| {
        let mut l = json!({LABEL_PART_OF: part_of});
        if managed {
            l["app.kubernetes.io/managed-by"] = json!("mxstack");
        }
        l
    };
    let cm = |name: &str, l: Value| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": HOME, "labels": l}});
    server.seed(cm("other-instance", labels(&applyset_id("matrix-2"), true)));
    server.seed(cm("not-ours", labels(&applyset_id(HOME), false)));
    server.seed(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "unlabelled", "namespace": HOME}}));
    let before = ids(&server);

    // Without --prune: reported, nothing deleted.
    let (r, events) = run(&server, &without, options());
    let s1 = r.expect("deploy without prune");
    let gone: BTreeSet<(String, String)> = with
        .iter()
        .filter(|w| {
            !without
                .iter()
                .any(|i| i.kind == w.kind && i.name == w.name && i.namespace == w.namespace)
        })
        .map(|i| (i.kind.clone(), i.name.clone()))
        .collect();
    assert!(
        !gone.is_empty()
            && gone
                .iter()
                .any(|(k, _)| k == "ServiceMonitor" || k == "PrometheusRule"),
        "{gone:?}"
    );
    assert_eq!(s1.leftovers, gone.len());
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, Event::Leftover { .. }))
            .count(),
        gone.len()
    );
    assert_eq!(ids(&server), before);

    // With --prune: exactly those are deleted.
    let mut opts = options();
    opts.prune = true;
    let s2 = run(&server, &without, opts).0.expect("deploy with prune");
    assert_eq!(s2.pruned, gone.len());
    let after = ids(&server);
    let deleted: BTreeSet<_> = before.difference(&after).cloned().collect();
    assert_eq!(deleted, gone);
    for kept in ["other-instance", "not-ours", "unlabelled"] {
        assert!(
            after.contains(&("ConfigMap".into(), kept.into())),
            "{kept} was pruned"
        );
    }
    // And the record now names only what the render uses: another prune deletes nothing.
    let s3 = run(&server, &without, opts).0.expect("again");
    assert_eq!((s3.pruned, s3.created, s3.configured), (0, 0, 0));
}

#[test]
fn dry_run_writes_nothing_and_shows_each_change_with_secret_values_hidden() {
    let server = server();
    let s = secrets();
    let items = items(&config(Tier::T100, &[Feature::Li]), &s);
    run(&server, &items, options()).0.expect("deploy");
    // Someone changed a Secret and a Deployment by hand.
    let secret = items
        .iter()
        .find(|i| {
            i.is_secret() && i.value["stringData"].is_object()
                || i.is_secret() && i.value["data"].is_object()
        })
        .expect("a Secret");
    let mut changed = server.get("Secret", Some(HOME), &secret.name).unwrap();
    let field = if changed["stringData"].is_object() {
        "stringData"
    } else {
        "data"
    };
    let key = changed[field]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .clone();
    changed[field][&key] = json!("dGFtcGVyZWQ=");
    server.seed(changed);
    let d = first(&items, "Deployment", "20-main");
    let mut dep = server.get("Deployment", Some(HOME), &d.name).unwrap();
    dep["spec"]["minReadySeconds"] = json!(99);
    server.seed(dep);
    let before: Vec<Value> = server.objects();
    server.clear_log();

    let mut opts = options();
    opts.dry_run = true;
    let (r, events) = run(&server, &items, opts);
    let summary = r.expect("dry run");
    assert!(summary.dry_run);
    assert_eq!(server.objects(), before, "a dry run writes nothing");
    assert!(
        server
            .log()
            .iter()
            .filter(|r| r.is_apply())
            .all(|r| r.dry_run()),
        "every apply was a server-side dry run"
    );
    let diff_of = |id: String| {
        events.iter().find_map(|e| match e {
            Event::Applied {
                object,
                change: Change::Configured,
                diff,
                ..
            } if *object == id => Some(diff.clone()),
            _ => None,
        })
    };
    let dd = diff_of(d.id()).expect("the Deployment would change");
    assert!(
        dd.iter().any(|l| l.starts_with("- .spec.minReadySeconds")),
        "{dd:?}"
    );
    let sd = diff_of(secret.id()).expect("the Secret would change");
    assert_eq!(sd, vec![format!("~ .{field}.{key}: (hidden) -> (hidden)")]);
    // No secret value, old or new, appears in any event.
    let text = serde_json::to_string(
        &events
            .iter()
            .map(|e| serde_json::to_value(e).unwrap())
            .collect::<Vec<_>>(),
    )
    .unwrap();
    assert!(!text.contains("dGFtcGVyZWQ="));
    // (Generated secrets are long; short values such as a username "synapse" are also names.)
    let long: Vec<(&String, &Value)> = secret.value[field]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, v)| v.as_str().unwrap().len() >= 16)
        .collect();
    assert!(!long.is_empty(), "the Secret holds a generated value");
    for (k, v) in long {
        assert!(
            !text.contains(v.as_str().unwrap()),
            "the value of {k} ({} bytes) was shown",
            v.as_str().unwrap().len()
        );
    }
}

#[test]
fn a_refused_permission_is_named_with_the_phase_to_resume_from() {
    let server = server();
    server.forbid("patch", "secrets");
    let items = items(&config(Tier::T100, &[]), &secrets());
    let (r, _) = run(&server, &items, options());
    let stopped = r.expect_err("forbidden");
    let text = stopped.to_string();
    assert!(matches!(stopped.error, Error::Forbidden { .. }), "{text}");
    assert!(text.contains("cannot patch resource \"secrets\""), "{text}");
    assert!(
        text.contains("grant the deploying identity `patch` on `secrets`"),
        "{text}"
    );
    let secret_phase = &items.iter().find(|i| i.is_secret()).unwrap().phase;
    assert_eq!(&stopped.phase, secret_phase);
    assert!(text.contains("00-namespace"), "says what completed: {text}");
}

#[test]
fn wrong_credentials_and_an_unreachable_cluster_are_one_clear_error() {
    let rt = runtime();
    let server = server();
    server.require_token("the-right-one");
    let (_d, path) = kubeconfig(&server, "a-wrong-one");
    let cluster = rt
        .block_on(mxstack_deploy::Cluster::connect(Some(&path)))
        .unwrap();
    let e = rt.block_on(cluster.version()).unwrap_err();
    assert!(matches!(e, Error::Unauthorized { .. }), "{e}");
    assert!(
        !e.to_string().contains("a-wrong-one"),
        "the token is never printed"
    );

    let dead = tempfile::tempdir().unwrap();
    let p = dead.path().join("kubeconfig");
    // A port nothing listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        &p,
        server
            .kubeconfig("t")
            .replace(&server.url(), &format!("http://127.0.0.1:{port}")),
    )
    .unwrap();
    let cluster = rt
        .block_on(mxstack_deploy::Cluster::connect(Some(&p)))
        .unwrap();
    let e = rt.block_on(cluster.version()).unwrap_err();
    assert!(matches!(e, Error::Unreachable { .. }), "{e}");
    assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}");
}

#[test]
fn with_operators_the_vendored_releases_go_first_serve_their_kinds_and_are_never_tracked() {
    // A cluster where only the operators that are not vendored were installed by hand.
    let by_hand: Vec<_> = mxstack_kube_mock::mxstack_crds()
        .into_iter()
        .filter(|r| {
            [
                "barmancloud.cnpg.io",
                "cert-manager.io",
                "gateway.envoyproxy.io",
            ]
            .contains(&r.group.as_str())
        })
        .collect();
    let server = MockApiServer::start("v1.33.1", &by_hand);
    let rendered = items(&config(Tier::T100, &[Feature::Monitoring]), &secrets());
    let (all, missing) =
        mxstack_deploy::objects::with_operators(rendered.clone()).expect("vendored YAML parses");
    assert!(
        missing.iter().any(|m| m.starts_with("cert-manager")),
        "{missing:?}"
    );
    let ops: Vec<&Item> = all.iter().filter(|i| i.phase == "05-operators").collect();
    assert!(ops
        .iter()
        .any(|i| i.kind == "CustomResourceDefinition" && i.name == "clusters.postgresql.cnpg.io"));
    assert!(ops
        .iter()
        .any(|i| i.kind == "Deployment" && i.namespace.as_deref() == Some("cnpg-system")));
    let grouped = mxstack_deploy::objects::phases(&all);
    let phases: Vec<&str> = grouped.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        &phases[..3],
        ["00-namespace", "05-operators", "10-infrastructure"]
    );

    let (r, _) = run(&server, &all, options());
    r.expect("deploys: the vendored CRDs made their kinds served");
    let crd = server
        .get(
            "CustomResourceDefinition",
            None,
            "clusters.postgresql.cnpg.io",
        )
        .expect("CRD applied");
    assert!(
        crd["metadata"]["labels"].get(LABEL_PART_OF).is_none(),
        "operators are not in the ApplySet"
    );
    let db = server
        .get(
            "Cluster",
            Some(HOME),
            &first(&rendered, "Cluster", "10-infrastructure").name,
        )
        .unwrap();
    assert_eq!(
        db["metadata"]["labels"][LABEL_PART_OF],
        json!(applyset_id(HOME))
    );

    // A later deploy without them prunes none of them.
    let mut opts = options();
    opts.prune = true;
    let s = run(&server, &rendered, opts).0.expect("prune run");
    assert_eq!(s.pruned, 0);
    assert!(server
        .get(
            "CustomResourceDefinition",
            None,
            "clusters.postgresql.cnpg.io"
        )
        .is_some());
}

#[test]
fn a_job_whose_template_changed_is_replaced_and_a_statefulsets_volumes_are_refused_with_the_fix() {
    let server = server();
    let items = items(&config(Tier::T100, &[Feature::Li]), &secrets());
    run(&server, &items, options()).0.expect("deploy");
    let job = first(&items, "Job", "10-infrastructure").clone();
    let uid =
        |s: &MockApiServer| s.get("Job", Some(HOME), &job.name).unwrap()["metadata"]["uid"].clone();
    let before = uid(&server);

    // An upgrade changes the Job's image: the API server refuses the template change.
    let mut next = items.clone();
    let j = next
        .iter_mut()
        .find(|i| i.kind == "Job" && i.name == job.name)
        .unwrap();
    j.value["spec"]["template"]["spec"]["containers"][0]["image"] =
        json!("registry.test/mxstack/seaweedfs:next");
    let (r, events) = run(&server, &next, options());
    let s = r.expect("the Job is replaced");
    assert_eq!(s.configured, 1, "{s:?}");
    assert_ne!(uid(&server), before, "a new Job");
    assert_eq!(
        server.get("Job", Some(HOME), &job.name).unwrap()["spec"]["template"]["spec"]["containers"]
            [0]["image"],
        "registry.test/mxstack/seaweedfs:next"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Ready { object, .. } if *object == job.id())),
        "the new Job was waited for"
    );

    // A StatefulSet's volume template cannot change: stop, with what to do.
    let mut next2 = next.clone();
    let sts = next2
        .iter_mut()
        .find(|i| i.kind == "StatefulSet" && i.value["spec"]["volumeClaimTemplates"].is_array())
        .expect("a StatefulSet with volumes");
    sts.value["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] =
        json!("999Gi");
    let stopped = run(&server, &next2, options()).0.expect_err("refused");
    let text = stopped.to_string();
    assert!(matches!(stopped.error, Error::Immutable { .. }), "{text}");
    assert!(
        text.contains("--cascade=orphan") && text.contains("updates to statefulset spec"),
        "{text}"
    );
}
