//! Structural tests of the rendered manifests: references resolve, selectors select, paths are
//! mounted, secrets stay in Secrets, and every supported combination renders.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use common::*;
use mxstack_spec::{Feature, IngressMode, MediaBackend, Tier};
use mxstack_topology::synapse::{homeserver_yaml, worker_yaml};
use mxstack_topology::Topology;
use serde_json::Value;

#[test]
fn rendering_is_deterministic() {
    let c = config(Tier::T5k, &all_features());
    let t = Topology::build(&c);
    let secrets = mxstack_spec::Secrets::generate_all().unwrap();
    let a = mxstack_k8s::render(&t, &secrets);
    let b = mxstack_k8s::render(&t, &secrets);
    assert_eq!(a.files, b.files);
    assert!(a.files.len() > 10);
}

#[test]
fn kustomizations_list_exactly_the_files() {
    let (r, _) = render(&config(Tier::T1k, &all_features()));
    let top: Value = serde_saphyr::from_str(&r.files["kustomization.yaml"]).unwrap();
    let phases: Vec<&str> = top["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        phases,
        [
            "00-namespace",
            "10-infrastructure",
            "20-main",
            "25-lawful-intercept",
            "30-edge",
            "40-calls",
            "50-push",
            "60-monitoring"
        ]
    );
    for phase in phases {
        let k: Value =
            serde_saphyr::from_str(&r.files[&format!("{phase}/kustomization.yaml")]).unwrap();
        let listed: BTreeSet<String> = k["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        let present: BTreeSet<String> = r
            .files
            .keys()
            .filter_map(|p| p.strip_prefix(&format!("{phase}/")))
            .filter(|f| *f != "kustomization.yaml")
            .map(String::from)
            .collect();
        assert_eq!(listed, present, "{phase}");
    }
    // Optional phases disappear with their feature.
    let (r, _) = render(&config(Tier::T1k, &[]));
    for gone in [
        "25-lawful-intercept",
        "40-calls",
        "50-push",
        "60-monitoring",
    ] {
        assert!(
            !r.files.keys().any(|k| k.starts_with(gone)),
            "{gone} without its feature"
        );
    }
}

#[test]
fn files_parse_back_to_the_objects() {
    let (r, _) = render(&config(Tier::T1k, &all_features()));
    let mut count = 0;
    for (path, text) in &r.files {
        if path.ends_with("kustomization.yaml") {
            continue;
        }
        for doc in text.split("---\n") {
            let v: Value = serde_saphyr::from_str(doc).unwrap_or_else(|e| panic!("{path}: {e}"));
            assert!(
                r.objects.iter().any(|o| o.value == v),
                "{path}: object not in `objects`"
            );
            count += 1;
        }
    }
    assert_eq!(count, r.objects.len());
}

#[test]
fn every_object_is_labelled_and_namespaced() {
    for c in [config(Tier::T1k, &all_features())] {
        let (r, _) = render(&c);
        for o in &r.objects {
            let v = &o.value;
            let labels = &v["metadata"]["labels"];
            assert_eq!(
                labels["app.kubernetes.io/part-of"],
                "mxstack",
                "{}",
                name(v)
            );
            assert_eq!(
                labels["app.kubernetes.io/managed-by"],
                "mxstack",
                "{}",
                name(v)
            );
            assert!(labels["app.kubernetes.io/name"].is_string(), "{}", name(v));
            let cluster_scoped = matches!(kind(v), "Namespace" | "ClusterIssuer");
            let ns = v["metadata"]["namespace"].as_str();
            if cluster_scoped {
                assert_eq!(ns, None, "{} {}", kind(v), name(v));
            } else if !(kind(v) == "Certificate" && name(v) == "mxstack-ca") {
                assert_eq!(ns, Some("matrix"), "{} {}", kind(v), name(v));
            }
        }
    }
}

#[test]
fn every_service_selects_some_pods() {
    for c in matrix().into_iter().filter(|c| c.scale == Tier::T1k) {
        let (r, _) = render(&c);
        let templates = pod_templates(&r);
        for svc in objects(&r, "Service") {
            let sel = &svc["spec"]["selector"];
            // MinIO's pods are made by its operator from the Tenant; nothing we render selects them.
            let hit = templates
                .iter()
                .any(|(_, _, t)| matches(sel, &t["metadata"]["labels"]));
            assert!(hit, "Service {} selects no pod template: {sel}", name(svc));
            // Named target ports exist on the selected containers.
            for p in svc["spec"]["ports"].as_array().unwrap() {
                let target = p["targetPort"].as_str().unwrap();
                let found = templates
                    .iter()
                    .filter(|(_, _, t)| matches(sel, &t["metadata"]["labels"]))
                    .all(|(_, _, t)| {
                        t["spec"]["containers"].as_array().unwrap().iter().any(|c| {
                            c["ports"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .any(|cp| cp["name"] == target)
                        })
                    });
                assert!(
                    found,
                    "Service {} port {target} is not a container port",
                    name(svc)
                );
            }
        }
        // Workload selectors select their own template.
        for v in r
            .objects
            .iter()
            .map(|o| &o.value)
            .filter(|v| matches!(kind(v), "Deployment" | "StatefulSet"))
        {
            assert!(
                matches(
                    &v["spec"]["selector"]["matchLabels"],
                    &v["spec"]["template"]["metadata"]["labels"]
                ),
                "{} {}",
                kind(v),
                name(v)
            );
        }
    }
}

/// Secret name -> keys, ConfigMap name -> keys.
fn stores(
    r: &mxstack_k8s::Rendered,
) -> (
    BTreeMap<String, BTreeSet<String>>,
    BTreeMap<String, BTreeSet<String>>,
) {
    let keys = |v: &Value, field: &str| -> BTreeSet<String> {
        v[field]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    };
    let secrets = objects(r, "Secret")
        .map(|v| (name(v).to_string(), keys(v, "stringData")))
        .collect();
    let maps = objects(r, "ConfigMap")
        .map(|v| (name(v).to_string(), keys(v, "data")))
        .collect();
    (secrets, maps)
}

/// Secrets made by cert-manager from rendered Certificates (they exist once issued).
fn certificate_secrets(r: &mxstack_k8s::Rendered) -> BTreeSet<String> {
    objects(r, "Certificate")
        .map(|v| v["spec"]["secretName"].as_str().unwrap().to_string())
        .collect()
}

/// Secrets CloudNativePG makes for `postgres` of clusters with superuser access.
fn cnpg_superuser_secrets(r: &mxstack_k8s::Rendered) -> BTreeSet<String> {
    objects(r, "Cluster")
        .filter(|c| c["spec"]["enableSuperuserAccess"] == true)
        .map(|c| format!("{}-superuser", name(c)))
        .collect()
}

#[test]
fn every_referenced_secret_and_config_map_key_exists() {
    for c in matrix().into_iter().filter(|c| c.scale == Tier::T100) {
        let (r, _) = render(&c);
        let (secrets, maps) = stores(&r);
        let certs = certificate_secrets(&r);
        let superusers = cnpg_superuser_secrets(&r);
        let has_secret = |n: &str, key: Option<&str>| {
            if certs.contains(n) {
                return true;
            }
            if superusers.contains(n) {
                return key.is_none_or(|k| ["username", "password"].contains(&k));
            }
            match (secrets.get(n), key) {
                (Some(_), None) => true,
                (Some(keys), Some(k)) => keys.contains(k),
                (None, _) => false,
            }
        };
        for (k, n, t) in pod_templates(&r) {
            let spec = &t["spec"];
            for vol in spec["volumes"].as_array().into_iter().flatten() {
                if let Some(s) = vol.get("secret") {
                    let sn = s["secretName"].as_str().unwrap();
                    assert!(has_secret(sn, None), "{k} {n}: volume secret {sn} missing");
                    for item in s["items"].as_array().into_iter().flatten() {
                        assert!(
                            has_secret(sn, item["key"].as_str()),
                            "{k} {n}: {sn} has no key {}",
                            item["key"]
                        );
                    }
                }
                if let Some(cm) = vol.get("configMap") {
                    let cn = cm["name"].as_str().unwrap();
                    let keys = maps
                        .get(cn)
                        .unwrap_or_else(|| panic!("{k} {n}: ConfigMap {cn} missing"));
                    for item in cm["items"].as_array().into_iter().flatten() {
                        assert!(
                            keys.contains(item["key"].as_str().unwrap()),
                            "{k} {n}: {cn} has no key {}",
                            item["key"]
                        );
                    }
                }
            }
            let containers = spec["containers"]
                .as_array()
                .unwrap()
                .iter()
                .chain(spec["initContainers"].as_array().into_iter().flatten());
            for ctr in containers {
                for e in ctr["env"].as_array().into_iter().flatten() {
                    // An optional key (the key vault's second key, present only while a
                    // rotation runs) may be absent.
                    if let Some(sk) = e
                        .pointer("/valueFrom/secretKeyRef")
                        .filter(|sk| sk["optional"] != true)
                    {
                        let (sn, key) = (sk["name"].as_str().unwrap(), sk["key"].as_str().unwrap());
                        assert!(
                            has_secret(sn, Some(key)),
                            "{k} {n}: env {} -> {sn}/{key} missing",
                            e["name"]
                        );
                    }
                    if let Some(ck) = e.pointer("/valueFrom/configMapKeyRef") {
                        let cn = ck["name"].as_str().unwrap();
                        assert!(
                            maps.get(cn)
                                .is_some_and(|m| m.contains(ck["key"].as_str().unwrap())),
                            "{k} {n}: {cn}"
                        );
                    }
                }
                for ef in ctr["envFrom"].as_array().into_iter().flatten() {
                    if let Some(s) = ef.get("secretRef") {
                        assert!(has_secret(s["name"].as_str().unwrap(), None));
                    }
                    if let Some(cm) = ef.get("configMapRef") {
                        assert!(maps.contains_key(cm["name"].as_str().unwrap()));
                    }
                }
                // subPath mounts name an existing key of their volume.
                for m in ctr["volumeMounts"].as_array().into_iter().flatten() {
                    if let Some(sub) = m["subPath"].as_str() {
                        let vol = spec["volumes"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .find(|v| v["name"] == m["name"])
                            .unwrap();
                        let cn = vol["configMap"]["name"]
                            .as_str()
                            .expect("subPath mounts are ConfigMaps");
                        assert!(maps[cn].contains(sub), "{k} {n}: {cn} has no {sub}");
                    }
                }
            }
        }
        // Custom resources that reference Secrets.
        let cluster = find(&r, "Cluster", "main-pg").unwrap();
        assert!(has_secret(
            cluster["spec"]["bootstrap"]["initdb"]["secret"]["name"]
                .as_str()
                .unwrap(),
            Some("password")
        ));
        // Managed roles' passwords, and the SQL a cluster runs at bootstrap.
        for cl in objects(&r, "Cluster") {
            for role in cl["spec"]["managed"]["roles"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let s = role["passwordSecret"]["name"].as_str().unwrap();
                assert!(has_secret(s, Some("username")) && has_secret(s, Some("password")));
                assert_eq!(secret_type(&r, s), "kubernetes.io/basic-auth", "{s}");
            }
            let refs = &cl["spec"]["bootstrap"]["initdb"]["postInitApplicationSQLRefs"];
            for cm in refs["configMapRefs"].as_array().into_iter().flatten() {
                let keys = &maps[cm["name"].as_str().unwrap()];
                assert!(keys.contains(cm["key"].as_str().unwrap()), "{cm}");
            }
            let s = cl["spec"]["bootstrap"]["initdb"]["secret"]["name"]
                .as_str()
                .unwrap();
            assert!(has_secret(s, Some("password")), "{s}");
        }
        let store = find(&r, "ObjectStore", "main-pg-backups").unwrap();
        for cred in ["accessKeyId", "secretAccessKey"] {
            let s = &store["spec"]["configuration"]["s3Credentials"][cred];
            assert!(
                has_secret(s["name"].as_str().unwrap(), s["key"].as_str()),
                "{cred}"
            );
        }
        if let Some(t) = find(&r, "Tenant", "minio") {
            assert!(has_secret(
                t["spec"]["configuration"]["name"].as_str().unwrap(),
                Some("config.env")
            ));
        }
        for gw in objects(&r, "Gateway") {
            for l in gw["spec"]["listeners"].as_array().unwrap() {
                for cr in l["tls"]["certificateRefs"].as_array().into_iter().flatten() {
                    assert!(
                        certs.contains(cr["name"].as_str().unwrap()),
                        "{}",
                        cr["name"]
                    );
                }
            }
        }
    }
}

fn secret_type<'a>(r: &'a mxstack_k8s::Rendered, secret: &str) -> &'a str {
    find(r, "Secret", secret).unwrap()["type"].as_str().unwrap()
}

/// Mounted paths of the pods of a Synapse StatefulSet.
fn mounts(sts: &Value) -> Vec<String> {
    sts["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mountPath"].as_str().unwrap().to_string())
        .collect()
}

fn collect_paths(v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let is_path = k.ends_with("_path") || k == "log_config" || k == "worker_log_config";
                if is_path {
                    if let Some(s) = v.as_str() {
                        out.push((k.clone(), s.to_string()));
                    }
                }
                collect_paths(v, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|v| collect_paths(v, out)),
        _ => {}
    }
}

#[test]
fn every_file_synapse_reads_is_inside_a_mounted_volume() {
    for features in feature_sets() {
        let c = mxstack_spec::Config::new("acme.test", Tier::T10k, features);
        let t = Topology::build(&c);
        let addr = mxstack_k8s::KubernetesAddressing::new(&c);
        let (r, _) = render(&c);
        let hs = homeserver_yaml(&t, &addr);
        for p in t.processes() {
            let sts_name = if p.is_main() {
                "synapse-main".to_string()
            } else {
                format!("synapse-{}", p.group)
            };
            let sts = find(&r, "StatefulSet", &sts_name).unwrap_or_else(|| panic!("{sts_name}"));
            let mounted = mounts(sts);
            let mut paths = Vec::new();
            collect_paths(&hs, &mut paths);
            if !p.is_main() {
                // The escrow module reads the vault's store API key per request, and only main
                // serves its endpoint: the key is mounted into main alone (checked below).
                paths.retain(|(k, _)| k != "api_key_path");
                collect_paths(&worker_yaml(&t, &p, &addr), &mut paths);
            }
            assert_eq!(
                paths.iter().any(|(k, _)| k == "api_key_path"),
                p.is_main() && c.has(Feature::Li)
            );
            // The config files themselves, as the command names them.
            for cp in mxstack_topology::synapse::config_paths(&t, &p, &addr) {
                paths.push(("--config-path".into(), cp.display().to_string()));
            }
            assert!(paths.iter().any(|(k, _)| k == "signing_key_path"));
            assert!(
                paths.iter().any(|(k, _)| k == "password_path"),
                "redis.password_path"
            );
            assert_eq!(
                paths.iter().any(|(k, _)| k == "turn_shared_secret_path"),
                c.has(Feature::Calls)
            );
            for (k, path) in &paths {
                let inside = mounted.iter().any(|m| Path::new(path).starts_with(m));
                assert!(
                    inside,
                    "{}: {k} = {path} is not under a mount ({mounted:?})",
                    p.name
                );
            }
            // The file name inside the mount is a key of the mounted ConfigMap / Secret.
            let spec = &sts["spec"]["template"]["spec"];
            let (secrets, maps) = stores(&r);
            for (k, path) in &paths {
                let path = Path::new(path);
                let m = spec["containers"][0]["volumeMounts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|m| path.starts_with(m["mountPath"].as_str().unwrap()))
                    .max_by_key(|m| m["mountPath"].as_str().unwrap().len())
                    .unwrap();
                let vol = spec["volumes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|v| v["name"] == m["name"])
                    .unwrap();
                if vol.get("emptyDir").is_some() {
                    continue;
                }
                let file = path
                    .strip_prefix(m["mountPath"].as_str().unwrap())
                    .unwrap()
                    .display()
                    .to_string();
                let file = file.replace("$(POD_NAME)", &p.name);
                let present = if let Some(cm) = vol.get("configMap") {
                    maps[cm["name"].as_str().unwrap()].contains(&file)
                } else {
                    let s = &vol["secret"];
                    match s["items"].as_array() {
                        Some(items) => items.iter().any(|i| i["path"] == file.as_str()),
                        None => secrets[s["secretName"].as_str().unwrap()].contains(&file),
                    }
                };
                assert!(
                    present,
                    "{}: {k} file {file} is not in volume {}",
                    p.name, m["name"]
                );
            }
        }
    }
}

#[test]
fn worker_command_picks_its_own_file_without_templating() {
    let (r, _) = render(&config(Tier::T1k, &all_features()));
    let sts = find(&r, "StatefulSet", "synapse-synchrotron").unwrap();
    let c = &sts["spec"]["template"]["spec"]["containers"][0];
    let cmd: Vec<&str> = c["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(cmd.last(), Some(&"/mxstack/workers/$(POD_NAME).yaml"));
    assert!(c["env"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["name"] == "POD_NAME"
            && e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"));
    assert!(sts["spec"]["template"]["spec"]
        .get("initContainers")
        .is_none());
    // One worker file per process that can exist, autoscaler maximum included.
    let t = Topology::build(&config(Tier::T1k, &all_features()));
    let g = t.group("synchrotron").unwrap();
    let cm = find(&r, "ConfigMap", "synapse-synchrotron-workers").unwrap();
    assert_eq!(
        cm["data"].as_object().unwrap().len(),
        g.max_replicas as usize
    );
}

#[test]
fn no_secret_value_outside_secrets_and_no_placeholders() {
    for c in matrix().into_iter().filter(|c| c.scale == Tier::T1k) {
        let (r, secrets) = render(&c);
        for o in &r.objects {
            if kind(&o.value) == "Secret" {
                continue;
            }
            let text = serde_json::to_string(&o.value).unwrap();
            for (k, v) in secrets.values() {
                assert!(
                    !text.contains(v),
                    "secret {k} appears in {} {}",
                    kind(&o.value),
                    name(&o.value)
                );
            }
            // Outside Secrets only: a generated password may contain these four letters.
            assert!(
                !text.to_ascii_lowercase().contains("todo"),
                "{} {} contains todo",
                kind(&o.value),
                name(&o.value)
            );
        }
        for (path, text) in &r.files {
            let lower = text.to_ascii_lowercase();
            for bad in ["changeme", "example.com", "example.org", "your-domain"] {
                assert!(!lower.contains(bad), "{path} contains {bad}");
            }
        }
    }
}

#[test]
fn one_secret_holds_the_database_password() {
    let (r, secrets) = render(&config(Tier::T1k, &all_features()));
    let pw = secrets.get(mxstack_spec::SecretName::SynapseDbPassword);
    let holders: Vec<&str> = objects(&r, "Secret")
        .filter(|s| serde_json::to_string(s).unwrap().contains(pw))
        .map(name)
        .collect();
    assert_eq!(holders, ["synapse-db-credentials"]);
    let s = find(&r, "Secret", "synapse-db-credentials").unwrap();
    assert_eq!(s["type"], "kubernetes.io/basic-auth");
    assert_eq!(s["stringData"]["username"], "synapse");
    let cluster = find(&r, "Cluster", "main-pg").unwrap();
    assert_eq!(
        cluster["spec"]["bootstrap"]["initdb"]["secret"]["name"],
        "synapse-db-credentials"
    );
    let main = find(&r, "StatefulSet", "synapse-main").unwrap();
    let env = &main["spec"]["template"]["spec"]["containers"][0]["env"];
    assert!(env
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["name"] == "PGPASSWORD"
            && e["valueFrom"]["secretKeyRef"]["name"] == "synapse-db-credentials"));
}

#[test]
fn autoscalers_only_for_synchrotron_and_generic() {
    for tier in Tier::ALL {
        let c = config(tier, &all_features());
        let (r, _) = render(&c);
        let t = Topology::build(&c);
        let targets: BTreeSet<String> = objects(&r, "HorizontalPodAutoscaler")
            .map(|h| {
                assert_eq!(h["spec"]["scaleTargetRef"]["kind"], "StatefulSet");
                h["spec"]["scaleTargetRef"]["name"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(
            targets,
            [
                "synapse-generic".to_string(),
                "synapse-synchrotron".to_string()
            ]
            .into()
        );
        for h in objects(&r, "HorizontalPodAutoscaler") {
            let g = t
                .groups
                .iter()
                .find(|g| g.object_name() == name(h))
                .unwrap();
            assert_eq!(h["spec"]["minReplicas"], g.replicas);
            assert_eq!(h["spec"]["maxReplicas"], g.max_replicas);
            assert!(find(&r, "StatefulSet", name(h)).is_some());
        }
    }
}

#[test]
fn multi_replica_workloads_have_disruption_budgets() {
    let (r, _) = render(&config(Tier::T5k, &all_features()));
    for v in r
        .objects
        .iter()
        .map(|o| &o.value)
        .filter(|v| matches!(kind(v), "Deployment" | "StatefulSet"))
    {
        if v["spec"]["replicas"].as_u64().unwrap() > 1 {
            let pdb = objects(&r, "PodDisruptionBudget").find(|p| {
                matches(
                    &p["spec"]["selector"]["matchLabels"],
                    &v["spec"]["template"]["metadata"]["labels"],
                )
            });
            assert!(pdb.is_some(), "{} {} has no PDB", kind(v), name(v));
        }
    }
}

#[test]
fn synapse_statefulsets_follow_the_topology() {
    for tier in Tier::ALL {
        let c = config(tier, &all_features());
        let t = Topology::build(&c);
        let (r, _) = render(&c);
        for g in &t.groups {
            let sts = find(&r, "StatefulSet", &g.object_name()).unwrap();
            assert_eq!(sts["spec"]["replicas"], g.replicas);
            assert_eq!(sts["spec"]["serviceName"], g.object_name().as_str());
            let svc = find(&r, "Service", &g.object_name()).unwrap();
            assert_eq!(svc["spec"]["clusterIP"], "None");
            let ctr = &sts["spec"]["template"]["spec"]["containers"][0];
            let probe = &ctr["readinessProbe"];
            if g.kind.serves_http() {
                assert_eq!(probe["httpGet"]["path"], "/health");
            } else {
                assert_eq!(probe["tcpSocket"]["port"], "metrics");
            }
            assert_eq!(
                ctr["resources"]["requests"]["memory"],
                g.resources.memory().as_str()
            );
        }
        let n_sts = objects(&r, "StatefulSet")
            .filter(|s| name(s).starts_with("synapse-"))
            .count();
        assert_eq!(n_sts, t.groups.len() + 1);
    }
}

#[test]
fn valkey_replication_is_initialised() {
    let (r, _) = render(&config(Tier::T1k, &all_features()));
    let cm = find(&r, "ConfigMap", "valkey-scripts").unwrap();
    let find_master = cm["data"]["find-master.sh"].as_str().unwrap();
    assert!(find_master.contains("SENTINEL get-master-addr-by-name mxstack"));
    assert!(find_master.contains("MASTER=\"valkey-0.${HEADLESS}\""));
    let start = cm["data"]["start-valkey.sh"].as_str().unwrap();
    assert!(start.contains("replicaof ${MASTER} 6379"));
    assert!(start.contains("replica-announce-ip ${SELF}"));
    let sentinel = cm["data"]["start-sentinel.sh"].as_str().unwrap();
    for line in [
        "sentinel resolve-hostnames yes",
        "sentinel announce-hostnames yes",
        "sentinel monitor mxstack ${MASTER} 6379 2",
    ] {
        assert!(sentinel.contains(line), "{line}");
    }
    let sts = find(&r, "StatefulSet", "valkey").unwrap();
    assert_eq!(sts["spec"]["replicas"], 3);
    assert_eq!(sts["spec"]["serviceName"], "valkey-headless");
    let names: Vec<&str> = sts["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"valkey") && names.contains(&"sentinel"));
    let ha = find(&r, "ConfigMap", "valkey-master-haproxy").unwrap();
    assert!(ha["data"]["haproxy.cfg"]
        .as_str()
        .unwrap()
        .contains("${REDIS_PASSWORD}"));
    let d = find(&r, "Deployment", "valkey-master").unwrap();
    assert!(
        d["spec"]["template"]["spec"]["containers"][0]["env"][0]["valueFrom"]["secretKeyRef"]
            ["name"]
            == "valkey-auth"
    );
    assert_eq!(
        find(&r, "Service", "valkey-master").unwrap()["spec"]["ports"][0]["port"],
        6379
    );
}

#[test]
fn postgres_cluster_uses_the_barman_plugin_and_sizing() {
    for tier in Tier::ALL {
        let c = config(tier, &all_features());
        let t = Topology::build(&c);
        let (r, _) = render(&c);
        let cl = &find(&r, "Cluster", "main-pg").unwrap()["spec"];
        assert_eq!(cl["instances"], t.sizing.postgres.instances);
        assert_eq!(
            cl["postgresql"]["parameters"]["max_connections"],
            t.budget.max_connections.to_string().as_str()
        );
        assert_eq!(cl["postgresql"]["synchronous"]["method"], "any");
        assert_eq!(
            cl["postgresql"]["synchronous"]
                .get("dataDurability")
                .is_some(),
            t.sizing.postgres.instances == 2
        );
        // Only for the li-prepare-main Job.
        assert_eq!(cl["enableSuperuserAccess"], c.has(Feature::Li));
        assert!(
            cl.get("backup").is_none(),
            "in-tree barmanObjectStore is deprecated"
        );
        assert_eq!(cl["plugins"][0]["name"], "barman-cloud.cloudnative-pg.io");
        assert_eq!(cl["bootstrap"]["initdb"]["localeCollate"], "C");
        assert!(cl["storage"].get("storageClass").is_none());
        let store = &find(&r, "ObjectStore", "main-pg-backups").unwrap()["spec"];
        assert_eq!(
            store["configuration"]["destinationPath"],
            "s3://pg-backups/main-pg"
        );
        assert_eq!(
            store["configuration"]["endpointURL"],
            "http://seaweedfs-s3.matrix.svc.cluster.local:8333"
        );
        let sb = &objects(&r, "ScheduledBackup").next().unwrap()["spec"];
        assert_eq!(sb["method"], "plugin");
        assert_eq!(sb["schedule"], c.backup.schedule.as_str());
    }
    let mut c = config(Tier::T1k, &[]);
    c.storage_class = Some("fast-ssd".into());
    let (r, _) = render(&c);
    let cl = &find(&r, "Cluster", "main-pg").unwrap()["spec"];
    assert_eq!(cl["storage"]["storageClass"], "fast-ssd");
    assert_eq!(cl["enableSuperuserAccess"], false, "no LI, no superuser");
    assert!(cl.get("managed").is_none());
}

#[test]
fn media_backends() {
    let mut c = config(Tier::T1k, &[]);
    let (r, _) = render(&c);
    let s3 = find(&r, "Service", "seaweedfs-s3").unwrap();
    assert_eq!(s3["spec"]["ports"][0]["port"], 8333);
    let job = find(&r, "Job", "seaweedfs-buckets").unwrap();
    let script = job["spec"]["template"]["spec"]["containers"][0]["command"][2]
        .as_str()
        .unwrap();
    assert!(
        script.contains("s3.bucket.create -name synapse-media")
            && script.contains("s3.bucket.create -name pg-backups")
    );
    assert!(find(&r, "Secret", "seaweedfs-s3-config").is_some());
    assert!(objects(&r, "Tenant").next().is_none());

    c.media.backend = MediaBackend::MinioLegacy;
    let (r, _) = render(&c);
    let tenant = find(&r, "Tenant", "minio").unwrap();
    assert!(tenant["metadata"]["annotations"]["mxstack.io/legacy"].is_string());
    assert!(find(&r, "StatefulSet", "seaweedfs-volume").is_none());

    c.media.backend = MediaBackend::S3;
    c.media.endpoint = Some("https://s3.eu-west-1.amazonaws.com".into());
    let (r, _) = render(&c);
    assert!(!r
        .objects
        .iter()
        .any(|o| name(&o.value).starts_with("seaweedfs") || kind(&o.value) == "Tenant"));
    assert!(find(&r, "Secret", "s3-credentials").is_some());
}

#[test]
fn edge_routes_only_public_paths() {
    let (r, _) = render(&config(Tier::T1k, &all_features()));
    let gw = find(&r, "Gateway", "mxstack").unwrap();
    assert_eq!(gw["spec"]["gatewayClassName"], "envoy-gateway");
    let hosts: BTreeSet<&str> = gw["spec"]["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["hostname"].as_str())
        .collect();
    for h in [
        "acme.test",
        "matrix.acme.test",
        "chat.acme.test",
        "matrix-li.acme.test",
    ] {
        assert!(hosts.contains(h), "{h}");
    }
    let matrix = find(&r, "HTTPRoute", "matrix").unwrap();
    let paths: Vec<&str> = matrix["spec"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["matches"][0]["path"]["value"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["/_matrix", "/_synapse/client"]);
    // The admin API is routed only on the Matrix LI host (allowed networks only, see
    // li_hosts_answer_only_the_allowed_networks).
    for route in objects(&r, "HTTPRoute") {
        let admin = serde_json::to_string(route)
            .unwrap()
            .contains("\"/_synapse/admin\"");
        assert_eq!(admin, name(route) == "matrix-li", "{}", name(route));
    }
    for cert in objects(&r, "Certificate").filter(|c| c["metadata"]["namespace"] == "matrix") {
        assert_eq!(cert["spec"]["issuerRef"]["name"], "mxstack-letsencrypt");
    }
    assert_eq!(objects(&r, "ClusterIssuer").count(), 4);

    let mut c = config(Tier::T1k, &[]);
    c.ingress.mode = IngressMode::Ingress;
    c.ingress.ingress_class = Some("traefik".into());
    c.tls.issuer = mxstack_spec::TlsIssuer::Selfsigned;
    let (r, _) = render(&c);
    assert!(objects(&r, "Gateway").next().is_none());
    let ing = find(&r, "Ingress", "matrix").unwrap();
    assert_eq!(ing["spec"]["ingressClassName"], "traefik");
    assert_eq!(
        ing["metadata"]["annotations"]["cert-manager.io/cluster-issuer"],
        "mxstack-selfsigned"
    );
    assert_eq!(ing["spec"]["tls"][0]["secretName"], "tls-matrix");
}

#[test]
fn well_known_and_element_reference_no_outside_service() {
    let (r, _) = render(&config(Tier::T1k, &[Feature::Calls]));
    let cm = find(&r, "ConfigMap", "element-config").unwrap();
    let cfg: Value = serde_json::from_str(cm["data"]["config.json"].as_str().unwrap()).unwrap();
    assert_eq!(
        cfg["default_server_config"]["m.homeserver"]["base_url"],
        "https://matrix.acme.test"
    );
    assert_eq!(
        cfg["default_server_config"]["m.homeserver"]["server_name"],
        "acme.test"
    );
    assert_eq!(cfg["disable_guests"], true);
    assert_eq!(
        cfg["room_directory"]["servers"],
        serde_json::json!(["acme.test"])
    );
    assert!(cfg.get("bug_report_endpoint_url").is_none());
    assert!(cfg.get("default_identity_server_url").is_none());
    let text = cm["data"]["config.json"].as_str().unwrap();
    for outside in [
        "vector.im",
        "element.io",
        "matrix.org",
        "matrix.to",
        "jitsi",
    ] {
        if outside == "jitsi" {
            assert_eq!(cfg["jitsi"], serde_json::json!({}));
        } else {
            assert!(!text.contains(outside), "{outside}");
        }
    }
    let client: Value = serde_json::from_str(cm["data"]["client.json"].as_str().unwrap()).unwrap();
    assert_eq!(
        client["m.homeserver"]["base_url"],
        "https://matrix.acme.test"
    );
    assert_eq!(client["org.matrix.msc4143.rtc_foci"][0]["type"], "livekit");
    assert!(
        cm["data"].get("server.json").is_none(),
        "no federation: no server delegation"
    );

    let (r, _) = render(&config(Tier::T1k, &[Feature::Federation]));
    let cm = find(&r, "ConfigMap", "element-config").unwrap();
    let server: Value = serde_json::from_str(cm["data"]["server.json"].as_str().unwrap()).unwrap();
    assert_eq!(server["m.server"], "matrix.acme.test:443");
    let client: Value = serde_json::from_str(cm["data"]["client.json"].as_str().unwrap()).unwrap();
    assert!(client.get("org.matrix.msc4143.rtc_foci").is_none());
}

#[test]
fn network_policies_follow_the_flows() {
    let c = config(Tier::T1k, &all_features());
    let (r, _) = render(&c);
    let pols: BTreeMap<&str, &Value> = objects(&r, "NetworkPolicy").map(|p| (name(p), p)).collect();
    let deny = pols["default-deny"];
    assert_eq!(deny["spec"]["podSelector"], serde_json::json!({}));
    assert_eq!(
        deny["spec"]["policyTypes"],
        serde_json::json!(["Ingress", "Egress"])
    );
    assert!(pols.contains_key("allow-dns"));
    // Every in-namespace party's policy selects pods that exist (Postgres and MinIO pods come from
    // operators).
    let templates = pod_templates(&r);
    for (n, p) in &pols {
        if *n == "default-deny"
            || *n == "allow-dns"
            || *n == "allow-postgres"
            || *n == "allow-li-postgres"
            || *n == "allow-minio"
        {
            continue;
        }
        let sel = &p["spec"]["podSelector"]["matchLabels"];
        assert!(
            templates
                .iter()
                .any(|(_, _, t)| matches(sel, &t["metadata"]["labels"])),
            "{n} selects nothing"
        );
    }
    // Every flow becomes an ingress rule on the receiver and an egress rule on the sender.
    let t = Topology::build(&c);
    for f in mxstack_topology::flows::flows(&t) {
        if f.to.in_namespace() {
            let p = pols[format!("allow-{}", f.to.as_str()).as_str()];
            let ok = p["spec"]["ingress"].as_array().unwrap().iter().any(|rule| {
                f.ports.iter().all(|port| {
                    rule["ports"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|x| x["port"] == *port)
                })
            });
            assert!(
                ok,
                "{:?} -> {:?} {:?} has no ingress rule",
                f.from, f.to, f.ports
            );
        }
        if f.from.in_namespace() {
            let p = pols[format!("allow-{}", f.from.as_str()).as_str()];
            assert!(!p["spec"]["egress"].as_array().unwrap().is_empty());
        }
    }
    // Internet egress for Synapse only with federation (seed 004 issue 3.5).
    let internet = |r: &mxstack_k8s::Rendered| {
        let p = find(r, "NetworkPolicy", "allow-synapse").unwrap();
        serde_json::to_string(&p["spec"]["egress"])
            .unwrap()
            .contains("0.0.0.0/0")
    };
    assert!(internet(&r));
    let (r2, _) = render(&config(Tier::T1k, &[Feature::Monitoring]));
    assert!(!internet(&r2));
    // Calls: public media ports with a port range.
    let coturn = pols["allow-coturn"];
    assert!(coturn["spec"]["ingress"][0]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p.get("endPort").is_some()));
}

#[test]
fn security_contexts_are_hardened() {
    let (r, _) = render(&config(Tier::T1k, &all_features()));
    for (k, n, t) in pod_templates(&r) {
        let spec = &t["spec"];
        assert_eq!(spec["securityContext"]["runAsNonRoot"], true, "{k} {n}");
        assert_eq!(
            spec["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
            "{k} {n}"
        );
        let containers = spec["containers"]
            .as_array()
            .unwrap()
            .iter()
            .chain(spec["initContainers"].as_array().into_iter().flatten());
        for c in containers {
            let sc = &c["securityContext"];
            assert_eq!(sc["allowPrivilegeEscalation"], false, "{k} {n}");
            assert_eq!(sc["capabilities"]["drop"][0], "ALL", "{k} {n}");
            assert!(
                c["resources"]["requests"]["memory"].is_string(),
                "{k} {n} has no memory request"
            );
        }
        assert_ne!(spec["hostNetwork"], true, "{k} {n}");
    }
    let main = find(&r, "StatefulSet", "synapse-main").unwrap();
    assert_eq!(
        main["spec"]["template"]["spec"]["securityContext"]["runAsUser"],
        991
    );
}

#[test]
fn router_has_two_replicas_and_the_generated_maps() {
    let c = config(Tier::T100, &[]);
    let t = Topology::build(&c);
    let (r, _) = render(&c);
    let d = find(&r, "Deployment", "synapse-router").unwrap();
    assert!(d["spec"]["replicas"].as_u64().unwrap() >= 2);
    let cm = find(&r, "ConfigMap", "synapse-router").unwrap();
    let files = mxstack_topology::haproxy::router(
        &t,
        &mxstack_k8s::KubernetesAddressing::new(&c),
        mxstack_topology::haproxy::Resolution::Dns,
        "/usr/local/etc/haproxy",
    );
    assert_eq!(cm["data"]["haproxy.cfg"], files.haproxy_cfg.as_str());
    assert_eq!(cm["data"]["routes.map"], files.routes_map.as_str());
    let probe = &d["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"];
    assert_eq!(probe["path"], "/healthz");
}

#[test]
fn every_combination_renders() {
    let configs = matrix();
    assert_eq!(configs.len(), 5 * 4 * 2 * 3);
    for c in configs {
        let (r, _) = render(&c);
        assert!(find(&r, "StatefulSet", "synapse-main").is_some());
        assert_eq!(
            objects(&r, "ServiceMonitor").next().is_some(),
            c.has(Feature::Monitoring)
        );
        assert_eq!(
            find(&r, "Deployment", "sygnal").is_some(),
            c.has(Feature::Push)
        );
        assert_eq!(
            find(&r, "Deployment", "livekit").is_some(),
            c.has(Feature::Calls)
        );
        assert_eq!(
            find(&r, "Secret", "key-vault-api-key").is_some(),
            c.has(Feature::Li)
        );
        for n in ["key-vault", "li-console"] {
            assert_eq!(
                find(&r, "Deployment", n).is_some(),
                c.has(Feature::Li),
                "{n}"
            );
        }
        assert_eq!(
            find(&r, "Secret", "turn-auth").is_some(),
            c.has(Feature::Calls)
        );
        for n in ["clamav", "content-scanner"] {
            assert_eq!(
                find(&r, "Deployment", n).is_some(),
                c.has(Feature::Antivirus),
                "{n}"
            );
        }
    }
}

#[test]
fn alert_expressions_look_like_promql() {
    let (r, _) = render(&config(Tier::T1k, &[Feature::Monitoring]));
    let rule = objects(&r, "PrometheusRule").next().unwrap();
    let rules = rule["spec"]["groups"][0]["rules"].as_array().unwrap();
    let names: BTreeSet<&str> = rules.iter().map(|r| r["alert"].as_str().unwrap()).collect();
    for a in [
        "SynapseDown",
        "RouterBackendDown",
        "PostgresNotReady",
        "ValkeyNoMaster",
    ] {
        assert!(names.contains(a), "{a}");
    }
    let metric = regex_lite_metric();
    for rl in rules {
        let e = rl["expr"].as_str().unwrap();
        let depth = e.chars().try_fold(0i32, |d, ch| {
            let d = match ch {
                '(' | '{' => d + 1,
                ')' | '}' => d - 1,
                _ => d,
            };
            (d >= 0).then_some(d)
        });
        assert_eq!(depth, Some(0), "unbalanced: {e}");
        assert_eq!(e.matches('"').count() % 2, 0, "quotes: {e}");
        assert!(metric(e), "no metric selector: {e}");
        assert!(
            ["==", "!=", ">", "<", "absent("]
                .iter()
                .any(|op| e.contains(op)),
            "no condition: {e}"
        );
        assert!(
            e.contains("namespace=\"matrix\""),
            "not scoped to the namespace: {e}"
        );
    }
}

/// A metric name followed by a label matcher, e.g. `up{`.
fn regex_lite_metric() -> impl Fn(&str) -> bool {
    |e: &str| {
        e.match_indices('{').any(|(i, _)| {
            let before = &e[..i];
            let name: String = before
                .chars()
                .rev()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            !name.is_empty() && !name.chars().last().unwrap().is_ascii_digit()
        })
    }
}

/// The Service a cluster address (`<service>.<namespace>.svc.cluster.local:<port>`) names: it
/// exists, has that port, and the port's target is a named port of a container in the pods the
/// Service selects.
fn service_behind<'a>(r: &'a mxstack_k8s::Rendered, address: &str) -> &'a Value {
    let (host, port) = address.rsplit_once(':').expect("host:port");
    let port: u64 = port.parse().unwrap();
    let mut labels = host.split('.');
    let (svc_name, ns) = (labels.next().unwrap(), labels.next().unwrap());
    assert_eq!(
        host,
        format!("{svc_name}.{ns}.svc.cluster.local"),
        "{address} is not a Service address"
    );
    let svc = find(r, "Service", svc_name).unwrap_or_else(|| panic!("no Service for {address}"));
    assert_eq!(svc["metadata"]["namespace"], ns, "{address}");
    let sp = svc["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["port"] == port)
        .unwrap_or_else(|| panic!("Service {svc_name} has no port {port}"));
    let target = &sp["targetPort"];
    let backed = pod_templates(r).into_iter().any(|(_, _, t)| {
        matches(&svc["spec"]["selector"], &t["metadata"]["labels"])
            && t["spec"]["containers"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|c| c["ports"].as_array().into_iter().flatten())
                .any(|cp| cp["name"] == *target && cp["containerPort"] == port)
    });
    assert!(backed, "no pod behind {address} listens on {target}");
    svc
}

fn container_names(spec: &Value, field: &str) -> Vec<String> {
    spec[field]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect()
}

fn scanner_config(r: &mxstack_k8s::Rendered) -> Value {
    serde_saphyr::from_str(
        find(r, "ConfigMap", "content-scanner-config").unwrap()["data"]["scanner.yaml"]
            .as_str()
            .unwrap(),
    )
    .unwrap()
}

#[test]
fn antivirus_renders_clamd_and_the_scanner_in_the_media_path() {
    let c = config(Tier::T1k, &[Feature::Antivirus]);
    let t = Topology::build(&c);
    let addr = mxstack_k8s::KubernetesAddressing::new(&c);
    let (r, secrets) = render(&c);

    // The scanner: `mxstack serve content-scanner` from images.mxstack, its config file mounted
    // where the command names it.
    let scanner = find(&r, "Deployment", "content-scanner").expect("scanner deployment");
    assert_eq!(scanner["spec"]["replicas"], 2);
    let pod = &scanner["spec"]["template"]["spec"];
    let ctr = &pod["containers"][0];
    assert_eq!(ctr["image"], c.images.mxstack.as_str());
    let cmd: Vec<&str> = ctr["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(
        cmd,
        [
            "mxstack",
            "serve",
            "content-scanner",
            "--config",
            "/mxstack/content-scanner/scanner.yaml",
            "--threads",
            &mxstack_topology::antivirus::scanner_threads(&t).to_string(),
        ]
    );
    // Threads follow the container's CPU request (one per started CPU).
    let cpu = ctr["resources"]["requests"]["cpu"].as_str().unwrap();
    let millis: usize = match cpu.strip_suffix('m') {
        Some(m) => m.parse().unwrap(),
        None => cpu.parse::<usize>().unwrap() * 1000,
    };
    assert_eq!(cmd[6], millis.div_ceil(1000).max(1).to_string(), "{cpu}");
    assert_eq!(ctr["readinessProbe"]["httpGet"]["path"], "/ready");
    assert_eq!(ctr["livenessProbe"]["httpGet"]["path"], "/health");
    let mount_of = |path: &str| {
        ctr["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| Path::new(path).starts_with(m["mountPath"].as_str().unwrap()))
            .max_by_key(|m| m["mountPath"].as_str().unwrap().len())
            .unwrap_or_else(|| panic!("{path} is not mounted"))
            .clone()
    };
    let volume = |m: &Value| {
        pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == m["name"])
            .unwrap()
            .clone()
    };
    let cfg_vol = volume(&mount_of("/mxstack/content-scanner/scanner.yaml"));
    assert_eq!(cfg_vol["configMap"]["name"], "content-scanner-config");

    // Its config: upstreams are exactly the media worker pods, clamd is the clamav Service.
    let cfg = scanner_config(&r);
    assert_eq!(
        cfg["upstreams"],
        serde_json::json!(mxstack_topology::antivirus::upstreams(&t, &addr))
    );
    let upstreams: Vec<&str> = cfg["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap())
        .collect();
    let media = t
        .processes()
        .into_iter()
        .filter(|p| p.kind == Some(mxstack_topology::workers::WorkerKind::MediaRepository))
        .count();
    assert!(media > 0);
    assert_eq!(upstreams.len(), media);
    assert!(
        upstreams
            .iter()
            .all(|u| u.starts_with("http://synapse-media-")),
        "{upstreams:?}"
    );
    assert_eq!(cfg["clamd"], "clamav.matrix.svc.cluster.local:3310");
    let clamav_svc = service_behind(&r, cfg["clamd"].as_str().unwrap());
    assert_eq!(name(clamav_svc), "clamav");
    assert_eq!(cfg["listen"], "0.0.0.0:8090");
    // What the scanner may hold in memory fits its container with room for the runtime.
    let limit_mib: u64 = ctr["resources"]["limits"]["memory"]
        .as_str()
        .unwrap()
        .strip_suffix("Mi")
        .unwrap()
        .parse()
        .unwrap();
    let budget = cfg["memory_budget_bytes"].as_u64().unwrap();
    assert!(
        budget >= cfg["memory_buffer_bytes"].as_u64().unwrap() && budget * 2 <= limit_mib << 20,
        "budget {budget} vs limit {limit_mib} MiB"
    );

    // The request secret: only in the Secret, mounted read-only where the config reads it.
    let secret_path = cfg["request_secret_path"].as_str().unwrap();
    let m = mount_of(secret_path);
    assert_eq!(m["readOnly"], true);
    let vol = volume(&m);
    assert_eq!(vol["secret"]["secretName"], "content-scanner-secrets");
    let file = Path::new(secret_path)
        .strip_prefix(m["mountPath"].as_str().unwrap())
        .unwrap()
        .display()
        .to_string();
    let item = vol["secret"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["path"] == file.as_str())
        .expect("the secret file is projected");
    let value = secrets.get(mxstack_spec::SecretName::ContentScannerRequestSecret);
    let secret = find(&r, "Secret", "content-scanner-secrets").unwrap();
    assert_eq!(secret["stringData"][item["key"].as_str().unwrap()], value);
    let holders: Vec<&str> = r
        .objects
        .iter()
        .map(|o| &o.value)
        .filter(|v| serde_json::to_string(v).unwrap().contains(value))
        .map(name)
        .collect();
    assert_eq!(holders, ["content-scanner-secrets"]);

    // The router's content-scanner backend and the Synapse upload module both target the
    // scanner Service's port, and the router has no fallback for it.
    let haproxy = find(&r, "ConfigMap", "synapse-router").unwrap()["data"]["haproxy.cfg"]
        .as_str()
        .unwrap()
        .to_string();
    let backend = haproxy
        .split("backend content-scanner\n")
        .nth(1)
        .expect("content-scanner backend")
        .split("\n\n")
        .next()
        .unwrap();
    let servers: Vec<&str> = backend
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("server "))
        .collect();
    assert!(!servers.is_empty(), "{backend}");
    for s in &servers {
        let address = s.split_whitespace().nth(2).unwrap();
        assert_eq!(name(service_behind(&r, address)), "content-scanner", "{s}");
        assert!(!s.contains("backup"), "{s}");
    }
    let hs: Value = serde_saphyr::from_str(
        find(&r, "ConfigMap", "synapse-config").unwrap()["data"]["homeserver.yaml"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let module = hs["modules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["module"] == mxstack_topology::antivirus::UPLOAD_MODULE)
        .expect("upload module");
    let url = module["config"]["scanner_url"].as_str().unwrap();
    let address = url
        .strip_prefix("http://")
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    assert_eq!(name(service_behind(&r, address)), "content-scanner");

    // clamd: its PING is the readiness probe, the signatures are read-only for it.
    let clamav = find(&r, "Deployment", "clamav").expect("clamav deployment");
    assert_eq!(clamav["spec"]["replicas"], 2);
    let pod = &clamav["spec"]["template"]["spec"];
    let clamd = &pod["containers"][0];
    assert_eq!(clamd["name"], "clamd");
    assert_eq!(clamd["image"], c.images.clamav.as_str());
    for probe in ["readinessProbe", "livenessProbe", "startupProbe"] {
        let args = clamd[probe]["exec"]["command"].as_array().unwrap();
        assert_eq!(args[0], "clamdscan", "{probe}");
        assert!(
            args.iter()
                .any(|a| a.as_str().unwrap().starts_with("--ping")),
            "{probe}"
        );
    }
    let startup = &clamd["startupProbe"];
    assert!(
        startup["periodSeconds"].as_i64().unwrap() * startup["failureThreshold"].as_i64().unwrap()
            >= 180,
        "loading the official databases takes minutes"
    );
    let sig = clamd["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == "/var/lib/clamav")
        .unwrap();
    assert_eq!(sig["readOnly"], true);
    let conf: &Value = find(&r, "ConfigMap", "clamav-config").unwrap();
    let clamd_conf = conf["data"]["clamd.conf"].as_str().unwrap();
    assert!(clamd_conf.contains("DatabaseDirectory /var/lib/clamav\n"));
    assert!(clamd_conf.contains("TCPSocket 3310\n"));
    let mem = |c: &Value| {
        mxstack_topology::sizing::parse_memory_mib(
            c["resources"]["limits"]["memory"].as_str().unwrap(),
        )
        .unwrap()
    };
    assert_eq!(
        u64::from(mem(clamd)),
        u64::from(
            t.sizing
                .resources_for(mxstack_spec::Component::Clamav, &c)
                .memory_mib
        )
    );

    // Without the feature nothing of it exists.
    let (r, _) = render(&config(Tier::T1k, &[Feature::Monitoring]));
    for o in &r.objects {
        let v = &o.value;
        let app = v["metadata"]["labels"]["app.kubernetes.io/name"].as_str();
        assert!(
            !matches!(app, Some("clamav" | "content-scanner")),
            "{} {} without antivirus",
            kind(v),
            name(v)
        );
        assert!(
            !name(v).contains("clamav") && !name(v).contains("content-scanner"),
            "{} {} without antivirus",
            kind(v),
            name(v)
        );
    }
    assert!(!r.files["20-main/synapse-router.yaml"].contains("content-scanner"));
}

#[test]
fn freshclam_runs_only_with_signature_updates() {
    for tier in Tier::ALL {
        let c = config(tier, &[Feature::Antivirus]);
        assert!(c.antivirus.signature_updates, "updates are the default");
        let (r, _) = render(&c);
        let clamav = find(&r, "Deployment", "clamav").unwrap();
        let pod = &clamav["spec"]["template"]["spec"];
        assert_eq!(container_names(pod, "containers"), ["clamd", "freshclam"]);
        assert_eq!(
            container_names(pod, "initContainers"),
            ["signatures-seed", "freshclam-init"]
        );
        let volume = |n: &str| {
            pod["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["name"] == n)
                .unwrap()
                .clone()
        };
        assert!(volume("signatures").get("emptyDir").is_some());
        assert!(find(&r, "PersistentVolumeClaim", "clamav-signatures").is_none());
        // The sidecar runs freshclam as a daemon with the generated config.
        let sidecar = &pod["containers"][1];
        let cmd = sidecar["command"].as_array().unwrap();
        assert_eq!(cmd[0], "freshclam");
        assert!(cmd.iter().any(|a| a == "--daemon"));
        assert!(cmd
            .iter()
            .any(|a| a == "--config-file=/etc/mxstack-clamav/freshclam.conf"));
        // The seed copies the image's databases into the volume freshclam and clamd use.
        let seed = &pod["initContainers"][0];
        let seed_mount = &seed["volumeMounts"][0];
        assert_eq!(seed_mount["name"], "signatures");
        let script = seed["command"][2].as_str().unwrap();
        assert!(script.contains("/var/lib/clamav/*.cvd"), "{script}");
        assert!(
            script.contains(seed_mount["mountPath"].as_str().unwrap()),
            "{script}"
        );
        assert_ne!(seed_mount["mountPath"], "/var/lib/clamav");
        let init = pod["initContainers"][1]["command"][2].as_str().unwrap();
        assert!(init.starts_with("freshclam --config-file="), "{init}");
        assert!(!init.contains("--daemon"), "{init}");
        // freshclam.conf says `TestDatabases no` (clamd tests what it loads), so freshclam needs
        // no engine of its own: its memory is far below clamd's.
        let mem = |c: &Value| c["resources"]["limits"]["memory"].clone();
        assert_eq!(mem(sidecar), "256Mi");
        assert_eq!(mem(&pod["containers"][0]), "3Gi");
        // Egress to the mirror exists only in this mode.
        let policy = find(&r, "NetworkPolicy", "allow-clamav").unwrap();
        assert!(
            serde_json::to_string(&policy["spec"]["egress"])
                .unwrap()
                .contains("0.0.0.0/0"),
            "clamav reaches the signature mirror"
        );

        // Air-gapped: no freshclam, no egress, signatures from the operator's volume.
        let mut air = c.clone();
        air.antivirus.signature_updates = false;
        let (r, _) = render(&air);
        let clamav = find(&r, "Deployment", "clamav").unwrap();
        let pod = &clamav["spec"]["template"]["spec"];
        assert_eq!(container_names(pod, "containers"), ["clamd"]);
        assert!(pod.get("initContainers").is_none());
        let text = serde_json::to_string(clamav).unwrap();
        assert!(!text.contains("freshclam "), "{text}");
        let vol = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "signatures")
            .unwrap();
        assert_eq!(
            vol["persistentVolumeClaim"]["claimName"],
            "clamav-signatures"
        );
        assert_eq!(vol["persistentVolumeClaim"]["readOnly"], true);
        let pvc = find(&r, "PersistentVolumeClaim", "clamav-signatures").unwrap();
        // Every clamd replica mounts it, on any node.
        assert_eq!(pvc["spec"]["accessModes"][0], "ReadWriteMany");
        let policy = find(&r, "NetworkPolicy", "allow-clamav").unwrap();
        assert!(
            !serde_json::to_string(&policy["spec"])
                .unwrap()
                .contains("0.0.0.0/0"),
            "air-gapped clamav has no internet egress"
        );
    }
}

#[test]
fn antivirus_replicas_follow_tier_and_overrides() {
    for tier in Tier::ALL {
        let (r, _) = render(&config(tier, &[Feature::Antivirus]));
        let want = if tier == Tier::T100 { 1 } else { 2 };
        for n in ["clamav", "content-scanner"] {
            let d = find(&r, "Deployment", n).unwrap();
            assert_eq!(d["spec"]["replicas"], want, "{n} at {tier:?}");
            assert_eq!(
                find(&r, "PodDisruptionBudget", n).is_some(),
                want > 1,
                "{n} at {tier:?}"
            );
        }
    }
    let mut c = config(Tier::T100, &[Feature::Antivirus]);
    for (component, replicas) in [
        (mxstack_spec::Component::ContentScanner, 3),
        (mxstack_spec::Component::Clamav, 2),
    ] {
        c.overrides.insert(
            component,
            mxstack_spec::ComponentOverride {
                replicas: Some(replicas),
                memory: Some("4Gi".into()),
                ..Default::default()
            },
        );
    }
    let (r, _) = render(&c);
    let d = find(&r, "Deployment", "content-scanner").unwrap();
    assert_eq!(d["spec"]["replicas"], 3);
    let clamav = find(&r, "Deployment", "clamav").unwrap();
    assert_eq!(clamav["spec"]["replicas"], 2);
    assert!(find(&r, "PodDisruptionBudget", "clamav").is_some());
    assert_eq!(
        clamav["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"],
        "4Gi"
    );
}

#[test]
fn content_scanner_is_scraped_and_alerted_on() {
    let (r, _) = render(&config(
        Tier::T1k,
        &[Feature::Antivirus, Feature::Monitoring],
    ));
    let sm = find(&r, "ServiceMonitor", "content-scanner").expect("ServiceMonitor");
    let svc = objects(&r, "Service")
        .find(|s| {
            matches(
                &sm["spec"]["selector"]["matchLabels"],
                &s["metadata"]["labels"],
            )
        })
        .expect("the ServiceMonitor selects a Service");
    assert_eq!(name(svc), "content-scanner");
    let port = &sm["spec"]["endpoints"][0]["port"];
    assert!(svc["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == *port));
    assert_eq!(sm["spec"]["endpoints"][0]["path"], "/metrics");
    let rule = objects(&r, "PrometheusRule").next().unwrap();
    let alerts: BTreeSet<&str> = rule["spec"]["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["alert"].as_str().unwrap())
        .collect();
    for a in ["ContentScannerDown", "ClamdUnavailable", "MalwareRefused"] {
        assert!(alerts.contains(a), "{a}");
    }
    // Without antivirus: neither.
    let (r, _) = render(&config(Tier::T1k, &[Feature::Monitoring]));
    assert!(find(&r, "ServiceMonitor", "content-scanner").is_none());
    let rule = objects(&r, "PrometheusRule").next().unwrap();
    for rl in rule["spec"]["groups"][0]["rules"].as_array().unwrap() {
        assert!(
            !rl["expr"].as_str().unwrap().contains("mxstack_scanner_")
                && !rl["alert"].as_str().unwrap().contains("Scanner"),
            "{rl}"
        );
    }
}

/// The rendered-object rules (as `mxstack check` and `render` run them) find nothing in any
/// combination, the port rules included: every policy port and Service target is a declared port.
#[test]
fn rendered_checks_pass_on_every_combination() {
    let mut failures = Vec::new();
    for c in matrix() {
        let (r, secrets) = render(&c);
        let objects: Vec<Value> = r.objects.iter().map(|o| o.value.clone()).collect();
        for f in mxstack_checks::rendered::check(&objects, Some(&secrets)) {
            failures.push(format!(
                "{:?} {:?} {:?} {:?}: {f}",
                c.scale, c.features, c.ingress.mode, c.media.backend
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The port rules read the real objects: a port renamed or renumbered on one side is found.
#[test]
fn port_rules_find_a_port_broken_in_the_real_render() {
    let (r, secrets) = render(&config(Tier::T1k, &all_features()));
    let objects: Vec<Value> = r.objects.iter().map(|o| o.value.clone()).collect();
    let port_findings = |objects: &[Value]| -> Vec<String> {
        mxstack_checks::rendered::check(objects, Some(&secrets))
            .into_iter()
            .filter(|f| matches!(f.rule, "MX-OUT-014" | "MX-OUT-015"))
            .map(|f| f.message)
            .collect()
    };
    assert_eq!(port_findings(&objects), Vec::<String>::new());
    fn router_port(objects: &mut [Value]) -> &mut Value {
        let d = objects
            .iter_mut()
            .find(|o| kind(o) == "Deployment" && name(o) == "synapse-router")
            .unwrap();
        &mut d["spec"]["template"]["spec"]["containers"][0]["ports"][0]
    }
    // The router listens elsewhere: the edge's policy (by number) no longer reaches it.
    let mut moved = objects.clone();
    router_port(&mut moved)["containerPort"] = 8081.into();
    let f = port_findings(&moved);
    assert!(
        f.iter()
            .any(|m| m.contains("allow-synapse-router allows ingress to port 8080/TCP")),
        "{f:?}"
    );
    // The port loses its name: the Service (by name) no longer has a target.
    let mut renamed = objects.clone();
    router_port(&mut renamed)["name"] = "web".into();
    let f = port_findings(&renamed);
    assert!(
        f.iter()
            .any(|m| m.contains("Service/synapse-router targets port `http` (TCP)")),
        "{f:?}"
    );
    // Egress to a port the Synapse pods do not serve.
    let mut egress = objects;
    let pol = egress
        .iter_mut()
        .find(|o| kind(o) == "NetworkPolicy" && name(o) == "allow-synapse-router")
        .unwrap();
    for rule in pol["spec"]["egress"].as_array_mut().unwrap() {
        for p in rule["ports"].as_array_mut().unwrap() {
            if p["port"] == 8008 {
                p["port"] = 8009.into();
            }
        }
    }
    let f = port_findings(&egress);
    assert!(
        f.iter().any(|m| m.contains("egress to port 8009/TCP")),
        "{f:?}"
    );
}

/// Issue 20 (coturn): the external IP and relay ports come from the config; without an
/// external IP the node's address is used, never a lookup.
#[test]
fn coturn_denies_every_inside_range_and_the_cluster_networks() {
    let args = |c: &mxstack_spec::Config| -> Vec<String> {
        let (r, _) = render(c);
        let d = find(&r, "Deployment", "coturn").expect("coturn").clone();
        d["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect()
    };
    let mut c = config(Tier::T100, &[Feature::Calls]);
    let a = args(&c);
    // Written out here, not read from the constant: the ranges that must never be relayed to.
    for range in [
        "10.0.0.0-10.255.255.255",
        "172.16.0.0-172.31.255.255",
        "192.168.0.0-192.168.255.255",
        "127.0.0.0-127.255.255.255",
        "169.254.0.0-169.254.255.255",
        "100.64.0.0-100.127.255.255",
        "::1",
        "::ffff:0.0.0.0-::ffff:255.255.255.255",
        "fc00::-fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        "fe80::-febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    ] {
        assert!(
            a.contains(&format!("--denied-peer-ip={range}")),
            "{range} not denied: {a:?}"
        );
    }
    assert!(
        a.iter()
            .filter(|x| x.contains("peer-ip="))
            .all(|x| !x.contains('/')),
        "coturn takes ranges, not CIDRs: {a:?}"
    );
    assert!(!a
        .iter()
        .any(|x| x.starts_with("--allowed-peer-ip") || x == "--allow-loopback-peers"));
    for flag in ["--no-cli", "--no-multicast-peers"] {
        assert!(a.contains(&flag.to_string()), "{flag}");
    }
    c.calls.cluster_cidrs = vec!["45.10.0.0/16".into()];
    c.calls.allowed_peer_ips = vec!["10.1.2.3".into()];
    let a = args(&c);
    assert!(
        a.contains(&"--denied-peer-ip=45.10.0.0-45.10.255.255".to_string()),
        "{a:?}"
    );
    assert!(
        a.contains(&"--allowed-peer-ip=10.1.2.3".to_string()),
        "{a:?}"
    );
    assert!(!a.contains(&"--allow-loopback-peers".to_string()));
    c.calls.allowed_peer_ips = vec!["127.0.0.1".into()];
    assert!(args(&c).contains(&"--allow-loopback-peers".to_string()));
}

#[test]
fn coturn_takes_its_external_ip_and_relay_ports_from_the_config() {
    let args_env = |r: &mxstack_k8s::Rendered| {
        let d = find(r, "Deployment", "coturn").expect("coturn");
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        (c["args"].clone(), c["env"].clone())
    };
    let mut c = config(Tier::T100, &[Feature::Calls]);
    let (args, env) = args_env(&render(&c).0);
    assert!(args
        .as_array()
        .unwrap()
        .contains(&"--external-ip=$(EXTERNAL_IP)".into()));
    assert!(env.to_string().contains("status.hostIP"));
    c.calls.external_ip = Some("203.0.113.7".parse().unwrap());
    c.calls.relay_port_first = 50000;
    c.calls.relay_port_last = 50009;
    let (r, _) = render(&c);
    let (args, env) = args_env(&r);
    let args: Vec<&str> = args
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    for a in [
        "--external-ip=203.0.113.7",
        "--min-port=50000",
        "--max-port=50009",
    ] {
        assert!(args.contains(&a), "{a} in {args:?}");
    }
    assert!(!env.to_string().contains("EXTERNAL_IP"));
    let svc = find(&r, "Service", "coturn").expect("Service");
    let relays = svc["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["name"].as_str().unwrap().starts_with("relay-"))
        .count();
    assert_eq!(relays, 10);
    let pol = find(&r, "NetworkPolicy", "allow-coturn").expect("policy");
    assert!(pol["spec"]["ingress"][0]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["port"] == 50000 && p["endPort"] == 50009));
}
