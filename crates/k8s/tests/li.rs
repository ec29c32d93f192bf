//! The lawful-intercept render (feature `li`): the LI PostgreSQL and main's side of the replica,
//! li-sync and its jobs, the browsing stack, its access control and its network isolation.

mod common;

use std::collections::BTreeSet;

use common::*;
use mxstack_spec::{Config, Feature, IngressMode, LiSyncMode, MediaBackend, SecretName, Tier};
use mxstack_topology::addressing::Addressing;
use mxstack_topology::Topology;
use serde_json::{json, Value};

const LI_PHASE: &str = "25-lawful-intercept";
/// Pods that run on the LI nodes (everything in the LI phase but li-prepare-main).
const LI_APPS: [&str; 8] = [
    "li-sync",
    "key-vault",
    "li-console",
    "li-working-copy",
    "li-dump",
    "synapse-li",
    "element-li",
    "synapse-admin-li",
];

/// The log collector (feature `monitoring`), whose API access tests/logs.rs checks.
const ALLOY: &str = "alloy";

fn li_config(tier: Tier) -> Config {
    let mut c = config(tier, &[Feature::Li, Feature::Monitoring]);
    c.li.allowed_cidrs = vec!["198.51.100.0/24".into(), "2001:db8::/64".into()];
    c
}

fn dump_config() -> Config {
    let mut c = li_config(Tier::T1k);
    c.li.sync = LiSyncMode::Dump;
    c.li.dump_schedule = "15 */4 * * *".into();
    c
}

fn app_of(template: &Value) -> &str {
    template["metadata"]["labels"]["app.kubernetes.io/name"]
        .as_str()
        .unwrap_or("")
}

/// Every workload pod template of the LI phase: (kind, name, template).
fn li_phase_templates(r: &mxstack_k8s::Rendered) -> Vec<(String, String, &Value)> {
    let names: BTreeSet<&str> = r
        .objects
        .iter()
        .filter(|o| o.phase == LI_PHASE)
        .map(|o| name(&o.value))
        .collect();
    pod_templates(r)
        .into_iter()
        .filter(|(_, n, _)| names.contains(n.as_str()))
        .collect()
}

/// Secret names a pod template references (volumes, env, envFrom), with the keys it reads
/// (`None`: the whole Secret).
fn referenced_secrets(template: &Value) -> Vec<(String, Option<String>)> {
    let spec = &template["spec"];
    let mut out = Vec::new();
    for v in spec["volumes"].as_array().into_iter().flatten() {
        if let Some(s) = v["secret"]["secretName"].as_str() {
            match v["secret"]["items"].as_array() {
                Some(items) => {
                    for i in items {
                        out.push((s.to_string(), i["key"].as_str().map(String::from)));
                    }
                }
                None => out.push((s.to_string(), None)),
            }
        }
    }
    let containers = spec["containers"]
        .as_array()
        .unwrap()
        .iter()
        .chain(spec["initContainers"].as_array().into_iter().flatten());
    for c in containers {
        for e in c["env"].as_array().into_iter().flatten() {
            // An optional key (the key vault's second key during a rotation) may be absent.
            if let Some(k) = e
                .pointer("/valueFrom/secretKeyRef")
                .filter(|k| k["optional"] != true)
            {
                out.push((
                    k["name"].as_str().unwrap().to_string(),
                    k["key"].as_str().map(String::from),
                ));
            }
        }
        for e in c["envFrom"].as_array().into_iter().flatten() {
            if let Some(s) = e["secretRef"]["name"].as_str() {
                out.push((s.to_string(), None));
            }
        }
    }
    out
}

fn env_of<'a>(template: &'a Value, var: &str) -> &'a Value {
    template["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == var)
        .unwrap_or_else(|| panic!("no env {var}"))
}

fn command(template: &Value) -> Vec<&str> {
    template["spec"]["containers"][0]["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect()
}

fn cron_template(cron: &Value) -> &Value {
    &cron["spec"]["jobTemplate"]["spec"]["template"]
}

fn yaml(text: &Value) -> Value {
    serde_saphyr::from_str(text.as_str().unwrap()).unwrap()
}

#[test]
fn li_postgres_is_on_the_li_nodes_with_mains_postgres_and_the_sizing() {
    for tier in Tier::ALL {
        let c = li_config(tier);
        let t = Topology::build(&c);
        let (r, _) = render(&c);
        let li = &find(&r, "Cluster", "li-pg").expect("li-pg")["spec"];
        let main = &find(&r, "Cluster", "main-pg").unwrap()["spec"];
        assert_eq!(li["instances"], 2);
        // The same image, so the same PostgreSQL major.
        assert_eq!(li["imageName"], main["imageName"]);
        assert_eq!(
            li["affinity"]["nodeSelector"],
            json!({ "mxstack.io/role": "li" })
        );
        assert_eq!(
            li["affinity"]["tolerations"],
            json!([{ "key": "mxstack.io/role", "operator": "Equal", "value": "li", "effect": "NoSchedule" }])
        );
        assert_eq!(li["affinity"]["podAntiAffinityType"], "required");
        // Storage: 70% of an LI node's disk (sizing role `lawful-intercept`).
        let node = t
            .sizing
            .nodes
            .iter()
            .find(|n| n.role == "lawful-intercept")
            .unwrap();
        let want = u64::from(node.storage_gb) * 70 / 100;
        let size = li["storage"]["size"].as_str().unwrap();
        let gib = size
            .strip_suffix("Gi")
            .map(|g| g.parse::<u64>().unwrap())
            .or_else(|| {
                size.strip_suffix("Ti")
                    .map(|t| t.parse::<u64>().unwrap() * 1024)
            })
            .unwrap();
        assert_eq!(gib, want, "{tier}: {size}");
        assert!(gib < u64::from(node.storage_gb), "fits on the node");
        let initdb = &li["bootstrap"]["initdb"];
        assert_eq!(initdb["database"], "synapse_li");
        assert_eq!(initdb["owner"], "li_sync");
        assert_eq!(initdb["secret"]["name"], "li-db-credentials");
        assert_eq!(initdb["localeCollate"], "C");
        assert_eq!(li["enableSuperuserAccess"], false);
        let roles = li["managed"]["roles"].as_array().unwrap();
        let role = |n: &str| roles.iter().find(|r| r["name"] == n).unwrap();
        // li-sync creates the subscription: superuser on the LI cluster only.
        assert_eq!(role("li_sync")["superuser"], true);
        assert_eq!(
            role("li_sync")["passwordSecret"]["name"],
            "li-db-credentials"
        );
        assert_eq!(role("synapse_li")["superuser"], false);
        assert_eq!(
            role("synapse_li")["passwordSecret"]["name"],
            "li-working-copy-credentials"
        );
    }
    let (r, _) = render(&li_config(Tier::T1k));
    let db = &find(&r, "Database", "synapse-li-work").expect("working copy")["spec"];
    assert_eq!(db["name"], "synapse_li_work");
    assert_eq!(db["owner"], "synapse_li");
    assert_eq!(db["cluster"]["name"], "li-pg");
    assert_eq!(db["localeCollate"], "C");
    assert_eq!(db["databaseReclaimPolicy"], "retain");
}

#[test]
fn main_is_prepared_for_the_replica_without_publication_or_subscription_objects() {
    let c = li_config(Tier::T1k);
    let (r, secrets) = render(&c);
    let main = &find(&r, "Cluster", "main-pg").unwrap()["spec"];
    assert_eq!(main["postgresql"]["parameters"]["wal_level"], "logical");
    let roles = main["managed"]["roles"].as_array().unwrap();
    assert_eq!(roles.len(), 1);
    let rep = &roles[0];
    assert_eq!(rep["name"], "li_replicator");
    assert_eq!(rep["login"], true);
    assert_eq!(rep["replication"], true);
    assert_eq!(
        rep["superuser"], false,
        "the replication role is not a superuser"
    );
    assert_eq!(rep["createrole"], false);
    assert_eq!(rep["passwordSecret"]["name"], "li-replication-credentials");
    // Memberships of a managed role are reconciled: they must match what the setup SQL grants.
    assert_eq!(rep["inRoles"], json!(["pg_read_all_stats"]));
    let setup = mxstack_topology::li::main_setup_sql("synapse", None);
    assert!(setup.contains("GRANT pg_read_all_stats TO li_replicator"));
    assert!(setup.contains("NOSUPERUSER"));
    let cred = find(&r, "Secret", "li-replication-credentials").unwrap();
    assert_eq!(cred["stringData"]["username"], "li_replicator");
    assert_eq!(
        cred["stringData"]["password"],
        secrets.get(SecretName::LiReplicationPassword)
    );
    assert_eq!(cred["metadata"]["labels"]["cnpg.io/reload"], "true");

    // The setup SQL runs at bootstrap from a ConfigMap, whole (dollar-quoted bodies intact).
    let refs = &main["bootstrap"]["initdb"]["postInitApplicationSQLRefs"]["configMapRefs"];
    assert_eq!(refs.as_array().unwrap().len(), 1);
    let cm = find(&r, "ConfigMap", refs[0]["name"].as_str().unwrap()).unwrap();
    let sql = cm["data"][refs[0]["key"].as_str().unwrap()]
        .as_str()
        .unwrap();
    assert_eq!(sql, setup);
    assert_eq!(sql.matches("$fn$").count() % 2, 0);
    let identity = sql
        .find("SELECT mxstack_li.ensure_replica_identity()")
        .unwrap();
    let publication = sql.find("CREATE PUBLICATION").unwrap();
    assert!(identity < publication, "identities before the publication");
    assert!(!sql.contains("PASSWORD"), "CloudNativePG sets the password");
    assert!(main.get("enableSuperuserAccess") == Some(&json!(true)));

    // Publication and subscription are made in order by SQL and li-sync, never as objects.
    for k in ["Publication", "Subscription"] {
        assert!(objects(&r, k).next().is_none(), "{k} rendered");
    }
}

#[test]
fn every_li_workload_runs_on_the_li_nodes_and_prepare_main_never_does() {
    let mut custom = li_config(Tier::T100);
    custom.li.node_label = "acme.test/lawful-intercept=true".into();
    for (c, key, value) in [
        (dump_config(), "mxstack.io/role", "li"),
        (custom, "acme.test/lawful-intercept", "true"),
    ] {
        let (r, _) = render(&c);
        let templates = li_phase_templates(&r);
        let apps: BTreeSet<&str> = templates.iter().map(|(_, _, t)| app_of(t)).collect();
        let mut want: BTreeSet<&str> = LI_APPS.into_iter().collect();
        want.insert("li-prepare-main");
        if c.li.sync == LiSyncMode::Logical {
            want.remove("li-dump");
        }
        assert_eq!(apps, want);
        for (k, n, t) in &templates {
            let spec = &t["spec"];
            if app_of(t) == "li-prepare-main" {
                assert!(spec.get("nodeSelector").is_none(), "{n}");
                assert!(spec.get("tolerations").is_none(), "{n}");
                let term = &spec["affinity"]["nodeAffinity"]
                    ["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0];
                assert_eq!(
                    term["matchExpressions"][0],
                    json!({ "key": key, "operator": "NotIn", "values": [value] }),
                    "{n}"
                );
                continue;
            }
            assert_eq!(spec["nodeSelector"], json!({ key: value }), "{k} {n}");
            assert_eq!(
                spec["tolerations"],
                json!([{ "key": key, "operator": "Equal", "value": value, "effect": "NoSchedule" }]),
                "{k} {n}"
            );
        }
        // No LI pod outside the LI phase.
        for (k, n, t) in pod_templates(&r) {
            if LI_APPS.contains(&app_of(t)) {
                assert!(templates.iter().any(|(_, m, _)| *m == n), "{k} {n}");
            }
        }
    }
}

#[test]
fn li_workloads_hold_no_credentials_of_main() {
    for c in [li_config(Tier::T1k), dump_config()] {
        let (r, secrets) = render(&c);
        let db_password = secrets.get(SecretName::SynapseDbPassword);
        let s3_admin = secrets.get(SecretName::S3SecretKey);
        let mut superuser_holders = Vec::new();
        for (k, n, t) in pod_templates(&r) {
            let refs = referenced_secrets(t);
            if refs.iter().any(|(s, _)| s == "main-pg-superuser") {
                superuser_holders.push(app_of(t).to_string());
            }
            if !LI_APPS.contains(&app_of(t)) {
                continue;
            }
            for (s, key) in &refs {
                assert_ne!(s, "synapse-db-credentials", "{k} {n}");
                assert!(!s.ends_with("-superuser"), "{k} {n} holds {s}");
                let secret = find(&r, "Secret", s).unwrap_or_else(|| panic!("{s}"));
                let values: Vec<&str> = match key {
                    Some(key) => vec![secret["stringData"][key.as_str()].as_str().unwrap()],
                    None => secret["stringData"]
                        .as_object()
                        .unwrap()
                        .values()
                        .map(|v| v.as_str().unwrap())
                        .collect(),
                };
                for v in values {
                    assert!(
                        !v.contains(db_password),
                        "{k} {n}: synapse_db_password via {s}"
                    );
                    assert!(!v.contains(s3_admin), "{k} {n}: main's S3 key via {s}");
                }
            }
        }
        // Only the prepare Job holds main's superuser, and it never runs on an LI node.
        assert_eq!(superuser_holders, ["li-prepare-main"]);
        // Synapse LI gets main's signing key and nothing else of synapse-secrets.
        let synapse_li = find(&r, "Deployment", "synapse-li").unwrap();
        let refs = referenced_secrets(&synapse_li["spec"]["template"]);
        let synapse_secrets: Vec<_> = refs
            .iter()
            .filter(|(s, _)| s == "synapse-secrets")
            .collect();
        assert_eq!(
            synapse_secrets,
            [&(
                "synapse-secrets".to_string(),
                Some("signing.key".to_string())
            )]
        );
    }
}

#[test]
fn no_secret_value_in_any_config_map_or_object_but_its_secret() {
    for c in [li_config(Tier::T100), dump_config()] {
        let (r, secrets) = render(&c);
        for cm in objects(&r, "ConfigMap") {
            let text = serde_json::to_string(cm).unwrap();
            for (k, v) in secrets.values() {
                assert!(!text.contains(v), "{k} in ConfigMap {}", name(cm));
            }
        }
        // The gate password is in no object at all: the gate Secret holds its hash.
        let gate = secrets.get(SecretName::LiGatePassword);
        for o in &r.objects {
            assert!(
                !serde_json::to_string(&o.value).unwrap().contains(gate),
                "{}",
                name(&o.value)
            );
        }
        let users = find(&r, "Secret", "li-gate-users").unwrap();
        let line = users["stringData"][".htpasswd"].as_str().unwrap();
        assert_eq!(users["stringData"]["users"], line);
        let hash = line
            .trim_end()
            .strip_prefix("investigator:{SHA}")
            .expect("htpasswd {SHA} line");
        assert_eq!(hash.len(), 28, "base64 of 20 bytes: {hash}");
        // Each LI credential sits in exactly one Secret.
        for name_ in [
            SecretName::LiReplicationPassword,
            SecretName::LiDbPassword,
            SecretName::LiWorkingCopyDbPassword,
            SecretName::LiS3SecretKey,
            SecretName::LiBrowsingS3SecretKey,
            SecretName::LiConsoleDbPassword,
            SecretName::LiConsoleSigningKey,
            SecretName::KeyVaultAgeIdentity,
            SecretName::KeyVaultRetrievalApiKey,
        ] {
            let v = secrets.get(name_);
            let holders: Vec<&str> = objects(&r, "Secret")
                .filter(|s| serde_json::to_string(s).unwrap().contains(v))
                .map(name)
                .filter(|n| *n != "seaweedfs-s3-config")
                .collect();
            assert_eq!(holders.len(), 1, "{name_:?}: {holders:?}");
        }
    }
}

#[test]
fn dump_mode_renders_the_dump_cron_job_and_logical_mode_does_not() {
    let (r, _) = render(&li_config(Tier::T1k));
    assert!(find(&r, "CronJob", "li-dump").is_none());
    let (r, _) = render(&dump_config());
    let dump = find(&r, "CronJob", "li-dump").expect("li-dump");
    assert_eq!(dump["spec"]["schedule"], "15 */4 * * *");
    assert_eq!(dump["spec"]["concurrencyPolicy"], "Forbid");
    let t = cron_template(dump);
    assert_eq!(
        command(t),
        [
            "mxstack",
            "li",
            "dump",
            "--li-sync-config",
            "/etc/mxstack/li-sync.yaml"
        ]
    );
    assert_eq!(
        env_of(t, "MXSTACK_LI_MAIN_PASSWORD")["valueFrom"]["secretKeyRef"]["name"],
        "li-replication-credentials"
    );
    // li-sync's config says dump too.
    let cfg = yaml(&find(&r, "ConfigMap", "li-sync-config").unwrap()["data"]["li-sync.yaml"]);
    assert_eq!(cfg["mode"], "dump");
    // The working copy is refreshed in both modes (the_working_copy_job_* below: how).
    for c in [li_config(Tier::T1k), dump_config()] {
        let (r, _) = render(&c);
        let wc = find(&r, "CronJob", "li-working-copy").expect("li-working-copy");
        assert_eq!(wc["spec"]["schedule"], c.li.working_copy_schedule.as_str());
        assert_eq!(wc["spec"]["concurrencyPolicy"], "Forbid");
    }
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect()
}

fn mount_names(container: &Value) -> Vec<&str> {
    container["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| m["name"].as_str().unwrap())
        .collect()
}

/// Volumes of a pod template that carry a service account token.
fn token_volumes(template: &Value) -> Vec<&str> {
    template["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| {
            v["projected"]["sources"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|s| s.get("serviceAccountToken").is_some())
        })
        .map(|v| v["name"].as_str().unwrap())
        .collect()
}

/// A config in another namespace than the default, so `-n` is proven to follow it.
fn namespaced(mut c: Config) -> Config {
    c.namespace = "acme-chat".into();
    c
}

#[test]
fn the_working_copy_job_refreshes_then_restarts_synapse_li() {
    for c in [namespaced(li_config(Tier::T1k)), dump_config()] {
        let ns = c.namespace.as_str();
        let (r, _) = render(&c);
        let t = cron_template(find(&r, "CronJob", "li-working-copy").unwrap());
        let spec = &t["spec"];
        let init = spec["initContainers"].as_array().unwrap();
        let main = spec["containers"].as_array().unwrap();
        assert_eq!(init.len(), 2);
        assert_eq!(main.len(), 1);

        // 1. The refresh, first, as an init container: a failure stops the pod before kubectl.
        let refresh = &init[0];
        assert_eq!(refresh["name"], "li-working-copy");
        assert_eq!(refresh["image"], c.images.mxstack.as_str());
        assert_eq!(
            strs(&refresh["command"]),
            [
                "mxstack",
                "li",
                "refresh-working-copy",
                "--li-sync-config",
                "/etc/mxstack/li-sync.yaml"
            ]
        );
        // It reads the replica and writes the working copy on the LI cluster with li_sync's
        // password and nothing else: main's password is not its business.
        assert_eq!(
            refresh["env"],
            json!([{ "name": "MXSTACK_LI_DB_PASSWORD", "valueFrom": { "secretKeyRef": {
                "name": "li-db-credentials", "key": "password", "optional": false } } }])
        );
        assert_eq!(mount_names(refresh), ["config", "tmp"]);
        assert_eq!(refresh["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(
            refresh["securityContext"]["allowPrivilegeEscalation"],
            false
        );
        assert_eq!(
            refresh["securityContext"]["capabilities"]["drop"],
            json!(["ALL"])
        );
        // The same container li-dump runs, with its own command and credentials.
        if let Some(dump) = find(&r, "CronJob", "li-dump") {
            let d = &cron_template(dump)["spec"]["containers"][0];
            for k in ["image", "securityContext", "volumeMounts", "resources"] {
                assert_eq!(refresh[k], d[k], "{k}");
            }
        }

        // 2. kubectl restarts exactly Deployment synapse-li in the namespace, 3. then waits.
        let restart = &init[1];
        let wait = &main[0];
        assert_eq!(restart["name"], "restart-synapse-li");
        assert_eq!(wait["name"], "wait-synapse-li");
        assert_eq!(
            strs(&restart["command"]),
            [
                "kubectl",
                "rollout",
                "restart",
                "deployment/synapse-li",
                "-n",
                ns
            ]
        );
        assert_eq!(
            strs(&wait["command"]),
            [
                "kubectl",
                "rollout",
                "status",
                "deployment/synapse-li",
                "--timeout=10m",
                "-n",
                ns
            ]
        );
        let synapse_li = find(&r, "Deployment", "synapse-li").unwrap();
        assert_eq!(synapse_li["metadata"]["namespace"], ns);
        assert_eq!(synapse_li["spec"]["strategy"]["type"], "Recreate");
        for k in [restart, wait] {
            assert_eq!(k["image"], c.images.kubectl.as_str());
            assert_eq!(
                k["env"],
                json!([{ "name": "HOME", "value": "/home/kubectl" }])
            );
            assert_eq!(mount_names(k), ["kube-api-access", "kubectl-home"]);
            assert_eq!(
                k["volumeMounts"][0]["mountPath"],
                "/var/run/secrets/kubernetes.io/serviceaccount"
            );
            assert_eq!(k["volumeMounts"][0]["readOnly"], true);
            assert_eq!(k["securityContext"]["readOnlyRootFilesystem"], true);
        }

        // Only the kubectl containers see the token: no automatic mount, a projected volume of
        // the job's own ServiceAccount.
        assert_eq!(spec["serviceAccountName"], "li-working-copy");
        assert_eq!(spec["automountServiceAccountToken"], false);
        assert_eq!(token_volumes(t), ["kube-api-access"]);
        let api = spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "kube-api-access")
            .unwrap();
        assert_eq!(
            api["projected"]["sources"],
            json!([
                { "serviceAccountToken": { "path": "token", "expirationSeconds": 600 } },
                { "configMap": { "name": "kube-root-ca.crt", "optional": false,
                                 "items": [{ "key": "ca.crt", "path": "ca.crt" }] } },
            ])
        );
        assert!(!mount_names(refresh).contains(&"kube-api-access"));
        assert_eq!(refresh.get("env").unwrap().as_array().unwrap().len(), 1);
    }
}

#[test]
fn the_working_copy_job_may_restart_synapse_li_and_nothing_else() {
    for c in [namespaced(li_config(Tier::T1k)), dump_config()] {
        let ns = c.namespace.as_str();
        let (r, _) = render(&c);
        let sa = find(&r, "ServiceAccount", "li-working-copy").expect("ServiceAccount");
        assert_eq!(sa["metadata"]["namespace"], ns);
        assert_eq!(sa["automountServiceAccountToken"], false);

        // One Role in the whole render: get/patch (rollout restart) and list/watch (rollout
        // status, by field selector metadata.name) on Deployment synapse-li, nothing else; no
        // ReplicaSets or Pods (kubectl reads a Deployment's rollout from its own status).
        // (The log collector's Role, pods and their logs, is held to its own in tests/logs.rs.)
        let roles: Vec<&Value> = objects(&r, "Role").filter(|x| name(x) != ALLOY).collect();
        assert_eq!(roles.len(), 1);
        assert!(objects(&r, "ClusterRole").next().is_none());
        assert!(objects(&r, "ClusterRoleBinding").next().is_none());
        let role = roles[0];
        assert_eq!(name(role), "li-working-copy");
        assert_eq!(role["metadata"]["namespace"], ns);
        let rules = role["rules"].as_array().unwrap();
        assert_eq!(rules.len(), 1, "{rules:?}");
        let rule = &rules[0];
        assert_eq!(strs(&rule["apiGroups"]), ["apps"]);
        assert_eq!(strs(&rule["resources"]), ["deployments"]);
        assert_eq!(strs(&rule["resourceNames"]), ["synapse-li"]);
        let verbs: BTreeSet<&str> = strs(&rule["verbs"]).into_iter().collect();
        assert_eq!(verbs, BTreeSet::from(["get", "list", "patch", "watch"]));
        assert_eq!(rule.as_object().unwrap().len(), 4, "{rule}");

        // The binding ties exactly that Role to exactly the job's ServiceAccount.
        let bindings: Vec<&Value> = objects(&r, "RoleBinding")
            .filter(|x| name(x) != ALLOY)
            .collect();
        assert_eq!(bindings.len(), 1);
        let b = bindings[0];
        assert_eq!(b["metadata"]["namespace"], ns);
        assert_eq!(
            b["roleRef"],
            json!({ "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "li-working-copy" })
        );
        assert_eq!(
            b["subjects"],
            json!([{ "kind": "ServiceAccount", "name": "li-working-copy", "namespace": ns }])
        );
        // The CronJob's pods run as that ServiceAccount.
        let t = cron_template(find(&r, "CronJob", "li-working-copy").unwrap());
        assert_eq!(t["spec"]["serviceAccountName"], sa["metadata"]["name"]);
    }
    // Without li there is no API access at all, but the log collector's with monitoring.
    for (features, holders) in [(vec![], vec![]), (vec![Feature::Monitoring], vec![ALLOY])] {
        let (r, _) = render(&config(Tier::T1k, &features));
        for k in ["ServiceAccount", "Role", "RoleBinding"] {
            assert_eq!(objects(&r, k).map(name).collect::<Vec<_>>(), holders, "{k}");
        }
    }
}

#[test]
fn no_other_pod_mounts_a_service_account_token() {
    let mut all = config(Tier::T1k, &all_features());
    all.li.allowed_cidrs = vec!["198.51.100.0/24".into()];
    for c in [all, dump_config()] {
        let (r, _) = render(&c);
        let mut holders = Vec::new();
        for (k, n, t) in pod_templates(&r) {
            let spec = &t["spec"];
            assert_eq!(spec["automountServiceAccountToken"], false, "{k} {n}");
            if !token_volumes(t).is_empty() || spec.get("serviceAccountName").is_some() {
                holders.push(format!("{k}/{n}"));
            }
        }
        // The working-copy job, and the log collector (monitoring), which lists pods and reads
        // their logs (tests/logs.rs).
        assert_eq!(holders, ["CronJob/li-working-copy", "DaemonSet/alloy"]);
    }
}

#[test]
fn li_sync_runs_once_with_its_config_and_credentials() {
    let c = li_config(Tier::T1k);
    let t = Topology::build(&c);
    let addr = mxstack_k8s::KubernetesAddressing::new(&c);
    let (r, secrets) = render(&c);
    let d = find(&r, "Deployment", "li-sync").expect("li-sync");
    assert_eq!(d["spec"]["replicas"], 1);
    assert_eq!(d["spec"]["strategy"]["type"], "Recreate");
    let pod = &d["spec"]["template"];
    let ctr = &pod["spec"]["containers"][0];
    assert_eq!(ctr["image"], c.images.mxstack.as_str());
    assert_eq!(
        command(pod),
        [
            "mxstack",
            "serve",
            "li-sync",
            "--config",
            "/etc/mxstack/li-sync.yaml"
        ]
    );
    assert_eq!(ctr["readinessProbe"]["httpGet"]["path"], "/health");
    assert_eq!(ctr["readinessProbe"]["httpGet"]["port"], "http");
    assert_eq!(ctr["ports"][0]["containerPort"], 8091);
    assert_eq!(ctr["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(pod["spec"]["securityContext"]["runAsNonRoot"], true);
    assert!(ctr["resources"]["limits"]["memory"].is_string());
    // The config file is li_sync_config, mounted where the command reads it.
    let cm = find(&r, "ConfigMap", "li-sync-config").unwrap();
    assert_eq!(
        yaml(&cm["data"]["li-sync.yaml"]),
        mxstack_topology::li::li_sync_config(&t, &addr, "0.0.0.0:8091")
    );
    let m = ctr["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == "/etc/mxstack")
        .unwrap();
    assert_eq!(m["readOnly"], true);
    // Each credential from the Secret that holds its value.
    for (var, secret) in [
        (
            "MXSTACK_LI_MAIN_PASSWORD",
            SecretName::LiReplicationPassword,
        ),
        ("MXSTACK_LI_DB_PASSWORD", SecretName::LiDbPassword),
        ("MXSTACK_LI_S3_ACCESS_KEY", SecretName::LiS3AccessKey),
        ("MXSTACK_LI_S3_SECRET_KEY", SecretName::LiS3SecretKey),
    ] {
        let r_ = &env_of(pod, var)["valueFrom"]["secretKeyRef"];
        let s = find(&r, "Secret", r_["name"].as_str().unwrap()).unwrap();
        assert_eq!(
            s["stringData"][r_["key"].as_str().unwrap()],
            secrets.get(secret),
            "{var}"
        );
    }
    // Its Service is the address the topology gives li-sync.
    let svc = find(&r, "Service", "li-sync").unwrap();
    assert_eq!(
        addr.li_sync().host,
        format!("li-sync.{}.svc.cluster.local", c.namespace)
    );
    assert_eq!(svc["spec"]["ports"][0]["port"], addr.li_sync().port);
    assert!(matches(
        &svc["spec"]["selector"],
        &pod["metadata"]["labels"]
    ));
    // The prepare Job: main's superuser from CloudNativePG's Secret, li-sync's config.
    let job = find(&r, "Job", "li-prepare-main").unwrap();
    let jt = &job["spec"]["template"];
    assert_eq!(
        command(jt),
        [
            "mxstack",
            "li",
            "prepare-main",
            "--li-sync-config",
            "/etc/mxstack/li-sync.yaml"
        ]
    );
    for (var, key) in [
        ("MXSTACK_LI_MAIN_ADMIN_USER", "username"),
        ("MXSTACK_LI_MAIN_ADMIN_PASSWORD", "password"),
    ] {
        let k = &env_of(jt, var)["valueFrom"]["secretKeyRef"];
        assert_eq!(k["name"], "main-pg-superuser");
        assert_eq!(k["key"], key);
    }
}

#[test]
fn synapse_li_has_registration_off_and_no_federation_listener() {
    let mut c = li_config(Tier::T1k);
    c.features.insert(Feature::Federation);
    c.synapse.enable_registration = true;
    let (r, _) = render(&c);
    let hs = yaml(&find(&r, "ConfigMap", "synapse-li-config").unwrap()["data"]["homeserver.yaml"]);
    // Main registers and federates here; Synapse LI does neither.
    assert_eq!(hs["enable_registration"], false);
    assert_eq!(hs["federation_domain_whitelist"], json!([]));
    for l in hs["listeners"].as_array().unwrap() {
        let names = serde_json::to_string(&l["resources"]).unwrap();
        assert!(!names.contains("federation"), "{l}");
    }
    assert_eq!(hs["database"]["args"]["dbname"], "synapse_li_work");
    assert_eq!(
        hs["database"]["args"]["host"],
        "li-pg-rw.matrix.svc.cluster.local"
    );
    let main_hs =
        yaml(&find(&r, "ConfigMap", "synapse-config").unwrap()["data"]["homeserver.yaml"]);
    assert_eq!(hs["server_name"], main_hs["server_name"]);
    assert!(serde_json::to_string(&main_hs["listeners"])
        .unwrap()
        .contains("federation"));

    let d = find(&r, "Deployment", "synapse-li").unwrap();
    assert_eq!(d["spec"]["strategy"]["type"], "Recreate");
    let t = &d["spec"]["template"];
    assert_eq!(
        t["spec"]["containers"][0]["image"],
        c.images.synapse.as_str()
    );
    assert_eq!(
        command(t),
        [
            "python",
            "-m",
            "synapse.app.homeserver",
            "--config-path",
            "/mxstack/config/homeserver.yaml"
        ]
    );
    assert_eq!(
        env_of(t, "PGPASSWORD")["valueFrom"]["secretKeyRef"]["name"],
        "li-working-copy-credentials"
    );
    assert_eq!(
        env_of(t, "AWS_ACCESS_KEY_ID")["valueFrom"]["secretKeyRef"]["name"],
        "synapse-li-s3-credentials"
    );
    // The matrix-li route reaches it, with the admin API for Synapse Admin LI.
    let route = find(&r, "HTTPRoute", "matrix-li").unwrap();
    assert_eq!(route["spec"]["hostnames"], json!(["matrix-li.acme.test"]));
    for rule in route["spec"]["rules"].as_array().unwrap() {
        assert_eq!(
            rule["backendRefs"][0],
            json!({ "name": "synapse-li", "port": 8008 })
        );
    }
    let svc = find(&r, "Service", "synapse-li").unwrap();
    assert_eq!(svc["spec"]["ports"][0]["port"], 8008);
    assert!(matches(&svc["spec"]["selector"], &t["metadata"]["labels"]));
}

#[test]
fn the_li_web_uis_are_unmistakable() {
    let (r, _) = render(&li_config(Tier::T1k));
    let brand = mxstack_topology::li_browsing::BRAND;
    let cm = find(&r, "ConfigMap", "element-li-config").unwrap();
    let cfg: Value = serde_json::from_str(cm["data"]["config.json"].as_str().unwrap()).unwrap();
    assert_eq!(cfg["brand"], brand);
    assert_eq!(
        cfg["default_server_config"]["m.homeserver"]["base_url"],
        "https://matrix-li.acme.test"
    );
    let theme = cfg["default_theme"].as_str().unwrap();
    let custom = cfg["setting_defaults"]["custom_themes"].as_array().unwrap();
    assert!(
        custom
            .iter()
            .any(|t| format!("custom-{}", t["name"].as_str().unwrap()) == theme),
        "{theme} is one of the custom themes"
    );
    assert_eq!(custom[0]["colors"]["accent-color"], "#b00020");
    assert_eq!(cfg["setting_defaults"]["UIFeature.registration"], false);
    // The banner is in the HTML every LI web server sends.
    let admin = find(&r, "ConfigMap", "synapse-admin-li-config").unwrap();
    for text in [
        cm["data"]["default.conf.template"].as_str().unwrap(),
        admin["data"]["nginx.conf"].as_str().unwrap(),
    ] {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with("sub_filter '</body>'"))
            .unwrap_or_else(|| panic!("no banner in {text}"));
        assert!(line.contains(brand), "{line}");
        assert!(
            text.contains("access_log /dev/stdout mxstack_li;"),
            "{text}"
        );
        assert!(
            text.contains("$http_x_li_gate_user"),
            "the gate user is logged"
        );
    }
    let admin_cfg: Value =
        serde_json::from_str(admin["data"]["config.json"].as_str().unwrap()).unwrap();
    assert_eq!(admin_cfg["restrictBaseUrl"], "https://matrix-li.acme.test");
    // The admin image's own entrypoint scripts are bypassed; our nginx.conf is loaded.
    let d = find(&r, "Deployment", "synapse-admin-li").unwrap();
    let t = &d["spec"]["template"];
    assert_eq!(
        command(t)[..3],
        ["nginx", "-c", "/etc/mxstack-admin/nginx.conf"]
    );
    assert_eq!(t["spec"]["securityContext"]["runAsUser"], 101);
}

#[test]
fn li_hosts_answer_only_the_allowed_networks() {
    // Gateway mode: a SecurityPolicy per LI route.
    let c = li_config(Tier::T1k);
    let (r, _) = render(&c);
    let policies: Vec<&Value> = objects(&r, "SecurityPolicy").collect();
    let names: BTreeSet<&str> = policies.iter().map(|p| name(p)).collect();
    assert_eq!(
        names,
        ["admin-li", "console-li", "element-li", "matrix-li"].into()
    );
    for p in &policies {
        let target = &p["spec"]["targetRefs"][0];
        assert_eq!(target["kind"], "HTTPRoute");
        let route = find(&r, "HTTPRoute", target["name"].as_str().unwrap()).unwrap();
        assert!(route["spec"]["hostnames"][0]
            .as_str()
            .unwrap()
            .contains("-li."));
        let authz = &p["spec"]["authorization"];
        assert_eq!(authz["defaultAction"], "Deny");
        assert_eq!(authz["rules"][0]["action"], "Allow");
        assert_eq!(
            authz["rules"][0]["principal"]["clientCIDRs"],
            json!(c.li.allowed_cidrs)
        );
        // Matrix clients send their own Authorization header: no basic auth on the API host;
        // the console has its own login with a second factor.
        let own_login = ["matrix-li", "console-li"].contains(&name(p));
        assert_eq!(
            p["spec"].get("basicAuth").is_some(),
            !own_login,
            "{}",
            name(p)
        );
        if !own_login {
            assert_eq!(p["spec"]["basicAuth"]["users"]["name"], "li-gate-users");
        }
    }
    // Every LI route has a policy; no other route has one.
    for route in objects(&r, "HTTPRoute") {
        let li = route["spec"]["hostnames"][0]
            .as_str()
            .is_some_and(|h| h.contains("-li."));
        assert_eq!(names.contains(name(route)), li, "{}", name(route));
    }
    // No allowed network: nobody gets in.
    let mut closed = c.clone();
    closed.li.allowed_cidrs.clear();
    let (r, _) = render(&closed);
    for p in objects(&r, "SecurityPolicy") {
        assert_eq!(p["spec"]["authorization"]["defaultAction"], "Deny");
        assert_eq!(p["spec"]["authorization"]["rules"], json!([]));
    }

    // Ingress mode: Traefik middlewares named on the LI Ingresses.
    let mut ing = c.clone();
    ing.ingress.mode = IngressMode::Ingress;
    let (r, _) = render(&ing);
    assert!(objects(&r, "SecurityPolicy").next().is_none());
    let allow = find(&r, "Middleware", "li-allowed-networks").unwrap();
    assert_eq!(
        allow["spec"]["ipAllowList"]["sourceRange"],
        json!(c.li.allowed_cidrs)
    );
    let gate = find(&r, "Middleware", "li-gate-password").unwrap();
    assert_eq!(gate["spec"]["basicAuth"]["secret"], "li-gate-users");
    let annotation = |n: &str| {
        find(&r, "Ingress", n).unwrap()["metadata"]["annotations"]
            ["traefik.ingress.kubernetes.io/router.middlewares"]
            .clone()
    };
    for n in ["matrix-li", "console-li"] {
        assert_eq!(annotation(n), "matrix-li-allowed-networks@kubernetescrd");
    }
    for n in ["element-li", "admin-li"] {
        assert_eq!(
            annotation(n),
            "matrix-li-allowed-networks@kubernetescrd,matrix-li-gate-password@kubernetescrd"
        );
    }
    for n in ["matrix", "element", "well-known"] {
        assert!(annotation(n).is_null(), "{n}");
    }
    ing.li.allowed_cidrs.clear();
    let (r, _) = render(&ing);
    assert_eq!(
        find(&r, "Middleware", "li-allowed-networks").unwrap()["spec"]["ipAllowList"]
            ["sourceRange"],
        json!(["0.0.0.0/32"])
    );
}

/// A NetworkPolicy peer as the party it stands for: the pod's name label, `cnpg:<cluster>`, or
/// `ns:<namespace>` / `ip:<cidr>`.
fn peer_name(p: &Value) -> String {
    if let Some(sel) = p["podSelector"]["matchLabels"].as_object() {
        if let Some(n) = sel.get("app.kubernetes.io/name") {
            return n.as_str().unwrap().to_string();
        }
        if let Some(c) = sel.get("cnpg.io/cluster") {
            return format!("cnpg:{}", c.as_str().unwrap());
        }
    }
    if let Some(ns) = p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"].as_str()
    {
        return format!("ns:{ns}");
    }
    format!("ip:{}", p["ipBlock"]["cidr"].as_str().unwrap_or("?"))
}

/// (peer, ports) of every ingress or egress rule of a policy.
fn rules(policy: &Value, direction: &str) -> Vec<(String, Vec<i64>)> {
    let field = if direction == "ingress" { "from" } else { "to" };
    policy["spec"][direction]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| {
            let ports: Vec<i64> = r["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| p["port"].as_i64().unwrap())
                .collect();
            r[field]
                .as_array()
                .unwrap()
                .iter()
                .map(move |p| (peer_name(p), ports.clone()))
        })
        .collect()
}

fn peers(policy: &Value, direction: &str, port: i64) -> BTreeSet<String> {
    rules(policy, direction)
        .into_iter()
        .filter(|(_, ports)| ports.contains(&port))
        .map(|(p, _)| p)
        .collect()
}

#[test]
fn network_policies_isolate_the_li_stack() {
    for c in [li_config(Tier::T1k), dump_config()] {
        let dump = c.li.sync == LiSyncMode::Dump;
        let (r, _) = render(&c);
        let policy = |n: &str| find(&r, "NetworkPolicy", n).unwrap_or_else(|| panic!("{n}"));
        let set = |v: &[&str]| {
            v.iter()
                .map(|s| s.to_string())
                .collect::<BTreeSet<String>>()
        };

        // main-pg on 5432: what already existed, plus the LI replica's parties only.
        let mut want = set(&[
            "synapse",
            "cnpg:main-pg",
            "ns:cnpg-system",
            "li-sync",
            "li-prepare-main",
        ]);
        if dump {
            want.insert("li-dump".into());
        } else {
            want.insert("cnpg:li-pg".into());
        }
        assert_eq!(peers(policy("allow-postgres"), "ingress", 5432), want);

        // li-pg on 5432: li-sync, Synapse LI, the working-copy job, its peers and operator.
        let mut want = set(&[
            "li-sync",
            "synapse-li",
            "li-working-copy",
            "li-console",
            "cnpg:li-pg",
            "ns:cnpg-system",
        ]);
        if dump {
            want.insert("li-dump".into());
        }
        let li_pg = policy("allow-li-postgres");
        assert_eq!(peers(li_pg, "ingress", 5432), want);
        assert_eq!(
            peers(li_pg, "egress", 5432),
            if dump {
                set(&["cnpg:li-pg"])
            } else {
                set(&["cnpg:li-pg", "cnpg:main-pg"])
            }
        );

        // Synapse LI: its database and the S3 endpoint; nothing on the internet.
        let synapse_li = policy("allow-synapse-li");
        let egress: BTreeSet<String> = rules(synapse_li, "egress")
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        assert_eq!(egress, set(&["cnpg:li-pg", "seaweedfs"]));
        assert_eq!(
            peers(synapse_li, "ingress", 8008),
            set(&["ns:envoy-gateway-system"])
        );
        // The web UIs only serve the edge: no egress at all (DNS aside).
        for n in ["allow-element-li", "allow-synapse-admin-li"] {
            assert_eq!(policy(n)["spec"]["egress"], json!([]), "{n}");
            assert_eq!(
                peers(policy(n), "ingress", 8080),
                set(&["ns:envoy-gateway-system"])
            );
        }
        // li-sync: main, the replica, S3; scraped by Prometheus.
        let li_sync = policy("allow-li-sync");
        let egress: BTreeSet<String> = rules(li_sync, "egress")
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        assert_eq!(egress, set(&["cnpg:li-pg", "cnpg:main-pg", "seaweedfs"]));
        assert_eq!(peers(li_sync, "ingress", 8091), set(&["ns:monitoring"]));
        // The jobs reach only the databases they work on.
        let only = |n: &str, want: &[&str]| {
            let egress: BTreeSet<String> = rules(policy(n), "egress")
                .into_iter()
                .map(|(p, _)| p)
                .collect();
            assert_eq!(egress, set(want), "{n}");
            assert_eq!(policy(n)["spec"]["ingress"], json!([]), "{n}");
        };
        // The working-copy job also reaches the Kubernetes API (restarting Synapse LI), which
        // a policy can only name by address: any address, on the API ports only.
        only("allow-li-working-copy", &["cnpg:li-pg", "ip:0.0.0.0/0"]);
        let wc = policy("allow-li-working-copy");
        for (peer, ports) in rules(wc, "egress") {
            if peer.starts_with("ip:") {
                assert_eq!(ports, [443, 6443], "{peer}");
            }
        }
        // No other LI pod may reach it (li-pg's instance manager aside: CloudNativePG's).
        for p in objects(&r, "NetworkPolicy") {
            let sel = &p["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"];
            let li_pod = LI_APPS.iter().any(|a| sel == a) || sel == "li-prepare-main";
            if !li_pod || name(p) == "allow-li-working-copy" {
                continue;
            }
            assert!(
                rules(p, "egress")
                    .iter()
                    .all(|(peer, ports)| !ports.contains(&6443) && peer != "ip:0.0.0.0/0"),
                "{}",
                name(p)
            );
        }
        only("allow-li-prepare-main", &["cnpg:main-pg"]);
        if dump {
            only("allow-li-dump", &["cnpg:li-pg", "cnpg:main-pg"]);
        } else {
            assert!(find(&r, "NetworkPolicy", "allow-li-dump").is_none());
        }
        // Every LI policy selects pods that exist (li-pg's pods come from its operator).
        let templates = pod_templates(&r);
        for p in objects(&r, "NetworkPolicy") {
            let n = name(p);
            if !n.starts_with("allow-li-") && !n.ends_with("-li") || n == "allow-li-postgres" {
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
    }
    // With media on an external S3 service, the S3 flows go to port 443 and nowhere else.
    let mut s3 = li_config(Tier::T1k);
    s3.media.backend = MediaBackend::S3;
    s3.media.endpoint = Some("https://s3.eu-west-1.amazonaws.com".into());
    let (r, _) = render(&s3);
    let p = find(&r, "NetworkPolicy", "allow-synapse-li").unwrap();
    for (peer, ports) in rules(p, "egress") {
        if peer.starts_with("ip:") {
            assert_eq!(ports, [443], "{peer}");
        }
    }
}

#[test]
fn li_sync_and_synapse_li_have_their_own_s3_identities_and_the_li_bucket_exists() {
    let c = li_config(Tier::T1k);
    let (r, secrets) = render(&c);
    let s3 = find(&r, "Secret", "seaweedfs-s3-config").unwrap();
    let ids: Value = serde_json::from_str(s3["stringData"]["s3.json"].as_str().unwrap()).unwrap();
    let identity = |n: &str| {
        ids["identities"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == n)
            .unwrap_or_else(|| panic!("{n}"))
            .clone()
    };
    let actions = |i: &Value| -> BTreeSet<String> {
        i["actions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect()
    };
    let li_sync = identity("li-sync");
    assert_eq!(
        actions(&li_sync),
        [
            "Read:synapse-media",
            "List:synapse-media",
            "Read:synapse-media-li",
            "List:synapse-media-li",
            "Write:synapse-media-li",
        ]
        .map(String::from)
        .into()
    );
    assert_eq!(
        li_sync["credentials"][0]["accessKey"],
        secrets.get(SecretName::LiS3AccessKey)
    );
    let synapse_li = identity("synapse-li");
    assert_eq!(
        actions(&synapse_li),
        ["Read:synapse-media-li", "List:synapse-media-li"]
            .map(String::from)
            .into()
    );
    assert_eq!(
        synapse_li["credentials"][0]["secretKey"],
        secrets.get(SecretName::LiBrowsingS3SecretKey)
    );
    let job = find(&r, "Job", "seaweedfs-buckets").unwrap();
    let script = job["spec"]["template"]["spec"]["containers"][0]["command"][2]
        .as_str()
        .unwrap();
    assert!(
        script.contains("s3.bucket.create -name synapse-media-li"),
        "{script}"
    );
    // A whole-name match: the LI bucket's name contains the main bucket's.
    assert!(
        script.contains("(^|[[:space:]])synapse-media([[:space:]]|$)"),
        "{script}"
    );

    let mut minio = c.clone();
    minio.media.backend = MediaBackend::MinioLegacy;
    minio.li.media_bucket = Some("evidence-media".into());
    let (r, _) = render(&minio);
    let tenant = find(&r, "Tenant", "minio").unwrap();
    assert!(tenant["spec"]["buckets"]
        .as_array()
        .unwrap()
        .contains(&json!({ "name": "evidence-media" })));
}

#[test]
fn li_sync_is_scraped_and_alerted_on() {
    let (r, _) = render(&li_config(Tier::T1k));
    let sm = find(&r, "ServiceMonitor", "li-sync").expect("ServiceMonitor");
    let svc = objects(&r, "Service")
        .find(|s| {
            matches(
                &sm["spec"]["selector"]["matchLabels"],
                &s["metadata"]["labels"],
            )
        })
        .expect("the ServiceMonitor selects a Service");
    assert_eq!(name(svc), "li-sync");
    assert_eq!(sm["spec"]["endpoints"][0]["path"], "/metrics");
    let pm = find(&r, "PodMonitor", "li-pg").expect("PodMonitor");
    assert_eq!(
        pm["spec"]["selector"]["matchLabels"],
        json!({ "cnpg.io/cluster": "li-pg" })
    );
    let rule = objects(&r, "PrometheusRule").next().unwrap();
    let rules = rule["spec"]["groups"][0]["rules"].as_array().unwrap();
    let expr = |alert: &str| {
        rules
            .iter()
            .find(|r| r["alert"] == alert)
            .unwrap_or_else(|| panic!("{alert}"))["expr"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let for_ = |alert: &str| {
        rules.iter().find(|r| r["alert"] == alert).unwrap()["for"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(expr("LiReplicaLagging").contains("mxstack_li_lag_seconds"));
    assert!(expr("LiReplicaLagging").ends_with("> 5"));
    assert_eq!(for_("LiReplicaLagging"), "5m");
    assert!(expr("LiApplyErrors").contains("increase(mxstack_li_apply_errors_total"));
    assert!(expr("LiSubscriptionDisabled").contains("mxstack_li_subscription_enabled"));
    assert!(expr("LiInitialCopyStalled").contains("mxstack_li_initial_copy_stalled"));
    assert!(expr("LiSlotRetainsTooMuchWal").contains("mxstack_li_slot_retained_bytes"));
    assert!(expr("LiSlotRetainsTooMuchWal").ends_with(&format!("> {}", 10u64 * 1024 * 1024 * 1024)));
    let backlog = expr("LiMediaBacklogNotShrinking");
    assert!(
        backlog.contains("delta(mxstack_li_media_backlog_objects{namespace=\"matrix\"}[30m])"),
        "{backlog}"
    );
    assert_eq!(for_("LiMediaBacklogNotShrinking"), "30m");
    assert!(expr("LiMediaCopyErrors").contains("mxstack_li_media_copy_errors_total"));
    assert!(expr("LiTablesWithoutReplicaIdentity").contains("mxstack_li_tables_without_identity"));
    assert!(expr("LiSyncDown").contains("service=\"li-sync\""));
    assert!(expr("LiDatabasesUnreachable").contains("mxstack_li_up"));
    for rl in rules {
        assert!(
            rl["expr"]
                .as_str()
                .unwrap()
                .contains("namespace=\"matrix\""),
            "{rl}"
        );
    }

    // Without the feature: none of it.
    let (r, _) = render(&config(Tier::T1k, &[Feature::Monitoring]));
    assert!(find(&r, "ServiceMonitor", "li-sync").is_none());
    let rule = objects(&r, "PrometheusRule").next().unwrap();
    assert!(!serde_json::to_string(rule).unwrap().contains("mxstack_li_"));
}

#[test]
fn without_li_nothing_of_it_is_rendered() {
    let (r, _) = render(&config(
        Tier::T1k,
        &[Feature::Antivirus, Feature::Monitoring],
    ));
    for o in &r.objects {
        let n = name(&o.value);
        assert!(
            !n.starts_with("li-") && !n.ends_with("-li") && !n.contains("-li-"),
            "{} {n} without li",
            kind(&o.value)
        );
        assert_ne!(o.phase, LI_PHASE);
    }
    let main = &find(&r, "Cluster", "main-pg").unwrap()["spec"];
    assert!(main["postgresql"]["parameters"].get("wal_level").is_none());
    assert!(main["bootstrap"]["initdb"]
        .get("postInitApplicationSQLRefs")
        .is_none());
    let s3: Value = serde_json::from_str(
        find(&r, "Secret", "seaweedfs-s3-config").unwrap()["stringData"]["s3.json"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(s3["identities"].as_array().unwrap().len(), 1);
}

/// nginx from the system (scripts/setup.sh installs it); a missing tool fails, never skips.
fn nginx() -> std::path::PathBuf {
    let p = std::path::Path::new("/usr/sbin/nginx");
    assert!(
        p.exists(),
        "/usr/sbin/nginx is missing: run scripts/setup.sh"
    );
    p.to_path_buf()
}

/// Serves `root` with an LI nginx config (rewritten only where the pod's paths and port differ
/// from a test's) and returns the responses to `paths` and the access log.
fn serve_li(config: &str, wrap_in_http: bool, paths: &[&str]) -> (Vec<String>, String) {
    use std::io::{Read, Write};
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // nginx workers run as an unprivileged user when the test runs as root.
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    let root = d.join("app");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(
        root.join("index.html"),
        "<!doctype html><html><head><title>app</title></head><body><div id=\"app\"></div></body></html>\n",
    )
    .unwrap();
    std::fs::write(root.join("config.json"), "{}\n").unwrap();
    for f in [&root, &root.join("index.html"), &root.join("config.json")] {
        let mode = if f.is_dir() { 0o755 } else { 0o644 };
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = d.join("access.log");
    // The pod's scratch directory first (the test's own paths are under /tmp too).
    let mut text = config
        .replace("/tmp/", &format!("{}/", d.display()))
        .replace("listen 8080;", &format!("listen 127.0.0.1:{port};"))
        .replace("listen [::]:8080;", "")
        .replace("root /app;", &format!("root {};", root.display()))
        .replace("/dev/stdout", &log.display().to_string())
        .replace("/dev/stderr", &d.join("error.log").display().to_string());
    assert!(
        text.contains(&format!("listen 127.0.0.1:{port};")),
        "{text}"
    );
    let conf = d.join("nginx.conf");
    if wrap_in_http {
        // As the Element image includes conf.d into its own http block.
        std::fs::write(d.join("default.conf"), &text).unwrap();
        text = format!(
            "pid {0}/nginx.pid;\nerror_log {0}/error.log;\nevents {{}}\nhttp {{\ninclude /etc/nginx/mime.types;\n\
             client_body_temp_path {0}/c; proxy_temp_path {0}/p; fastcgi_temp_path {0}/f;\n\
             uwsgi_temp_path {0}/u; scgi_temp_path {0}/s;\ninclude {0}/default.conf;\n}}\n",
            d.display()
        );
    }
    std::fs::write(&conf, text).unwrap();
    let mut child = std::process::Command::new(nginx())
        .args(["-c", conf.to_str().unwrap(), "-g", "daemon off;"])
        // Its workers must not hold the test's output open.
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start nginx");
    let get = |path: &str| -> Option<String> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        write!(
            s,
            "GET {path} HTTP/1.0\r\nHost: chat-li.acme.test\r\nX-LI-Gate-User: investigator\r\n\
             X-Forwarded-For: 198.51.100.7\r\n\r\n"
        )
        .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        Some(out)
    };
    let mut ready = false;
    for _ in 0..100 {
        if get("/healthz").is_some_and(|r| r.contains("200 OK")) {
            ready = true;
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            child.stderr.take().unwrap().read_to_string(&mut err).ok();
            panic!("nginx exited ({status}): {err}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let responses = paths.iter().map(|p| get(p).unwrap_or_default()).collect();
    // A fast shutdown through the master, which takes its workers with it (SIGKILL would
    // orphan them).
    let stopped = std::process::Command::new(nginx())
        .args(["-c", conf.to_str().unwrap(), "-s", "stop"])
        .status()
        .is_ok_and(|s| s.success());
    if !stopped {
        child.kill().ok();
    }
    child.wait().ok();
    assert!(ready, "nginx did not answer /healthz");
    (responses, std::fs::read_to_string(&log).unwrap_or_default())
}

#[test]
fn li_web_servers_show_the_banner_and_log_the_gate_user_in_real_nginx() {
    let (r, _) = render(&li_config(Tier::T1k));
    let element = find(&r, "ConfigMap", "element-li-config").unwrap()["data"]
        ["default.conf.template"]
        .as_str()
        .unwrap()
        .to_string();
    let admin = find(&r, "ConfigMap", "synapse-admin-li-config").unwrap()["data"]["nginx.conf"]
        .as_str()
        .unwrap()
        .to_string();
    let brand = mxstack_topology::li_browsing::BRAND;
    for (name_, config, wrap) in [
        ("element-li", element, true),
        ("synapse-admin-li", admin, false),
    ] {
        // A page, a deep link the single-page app answers with index.html, and a JSON file.
        let (responses, log) = serve_li(&config, wrap, &["/", "/#/room/x", "/config.json"]);
        for page in &responses[..2] {
            assert!(page.starts_with("HTTP/1.1 200"), "{name_}: {page}");
            let banner = page
                .find(brand)
                .unwrap_or_else(|| panic!("{name_}: no banner: {page}"));
            assert!(banner < page.find("</body>").unwrap(), "{name_}");
            assert!(page.contains("X-Robots-Tag: noindex, nofollow"), "{name_}");
        }
        assert!(!responses[2].contains(brand), "{name_}: JSON is left alone");
        assert!(
            log.contains("client=198.51.100.7 gate_user=investigator \"GET / HTTP/1.0\" 200"),
            "{name_}: {log}"
        );
        assert!(
            !log.contains("/healthz"),
            "{name_}: health checks are not logged"
        );
    }
}

#[test]
fn the_key_vault_runs_once_on_the_li_nodes_with_its_config_and_keys() {
    let c = li_config(Tier::T1k);
    let (r, secrets) = render(&c);
    let d = find(&r, "Deployment", "key-vault").expect("key-vault");
    assert_eq!(d["spec"]["replicas"], 1);
    assert_eq!(d["spec"]["strategy"]["type"], "Recreate");
    let pod = &d["spec"]["template"];
    let ctr = &pod["spec"]["containers"][0];
    assert_eq!(ctr["image"], c.images.mxstack.as_str());
    assert_eq!(
        command(pod),
        [
            "mxstack",
            "serve",
            "key-vault",
            "--config",
            "/etc/mxstack/key-vault.yaml"
        ]
    );
    assert_eq!(ctr["readinessProbe"]["httpGet"]["path"], "/health");
    assert_eq!(ctr["ports"][0]["containerPort"], 8092);
    assert_eq!(ctr["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(pod["spec"]["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["spec"]["nodeSelector"],
        json!({ "mxstack.io/role": "li" })
    );
    // The config is key_vault_config with the identity's public recipient, on the PVC.
    let cm = find(&r, "ConfigMap", "key-vault-config").unwrap();
    let recipient = secrets.key_vault_recipient().unwrap();
    assert_eq!(
        yaml(&cm["data"]["key-vault.yaml"]),
        mxstack_topology::escrow::key_vault_config(
            "0.0.0.0:8092",
            "/var/lib/mxstack-key-vault/key-vault.sqlite3",
            &recipient,
            &secrets.li_console_public_key().unwrap(),
        )
    );
    let text = cm["data"]["key-vault.yaml"].as_str().unwrap();
    assert!(!text.contains(secrets.get(SecretName::KeyVaultAgeIdentity)));
    let data = pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "data")
        .unwrap();
    assert_eq!(data["persistentVolumeClaim"]["claimName"], "key-vault-data");
    assert!(find(&r, "PersistentVolumeClaim", "key-vault-data").is_some());
    assert!(ctr["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["name"] == "data" && m["mountPath"] == "/var/lib/mxstack-key-vault"));
    let svc = find(&r, "Service", "key-vault").unwrap();
    assert_eq!(svc["spec"]["ports"][0]["port"], 8092);
    let addr = mxstack_k8s::KubernetesAddressing::new(&c);
    assert_eq!(addr.key_vault().port, 8092);
    // The store key: Synapse main and the vault only; the retrieval key: the vault and the LI
    // console only.
    let store = secrets.get(SecretName::KeyVaultStoreApiKey);
    let retrieval = secrets.get(SecretName::KeyVaultRetrievalApiKey);
    let s = find(&r, "Secret", "key-vault-api-key").unwrap();
    assert_eq!(s["stringData"]["store_api_key"], store);
    let s = find(&r, "Secret", "key-vault-retrieval-api-key").unwrap();
    assert_eq!(s["stringData"]["retrieval_api_key"], retrieval);
    let mut readers = BTreeSet::new();
    for (_, n, t) in pod_templates(&r) {
        for (secret, _) in referenced_secrets(t) {
            if secret == "key-vault-api-key" || secret == "key-vault-retrieval-api-key" {
                readers.insert((secret, n.clone()));
            }
        }
    }
    let want: BTreeSet<(String, String)> = [
        ("key-vault-api-key", "synapse-main"),
        ("key-vault-api-key", "key-vault"),
        ("key-vault-retrieval-api-key", "key-vault"),
        ("key-vault-retrieval-api-key", "li-console"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(readers, want);
    assert_eq!(
        env_of(pod, "MXSTACK_KEY_VAULT_RETRIEVAL_API_KEY")["valueFrom"]["secretKeyRef"]["name"],
        "key-vault-retrieval-api-key"
    );
}

#[test]
fn only_synapse_main_the_li_console_and_monitoring_reach_the_key_vault() {
    for monitoring in [true, false] {
        let mut c = li_config(Tier::T1k);
        if !monitoring {
            c.features.remove(&Feature::Monitoring);
        }
        let (r, _) = render(&c);
        let p = find(&r, "NetworkPolicy", "allow-key-vault").expect("allow-key-vault");
        assert_eq!(p["spec"]["egress"], json!([]));
        let ingress = p["spec"]["ingress"].as_array().unwrap();
        let mut from: Vec<Value> = ingress
            .iter()
            .flat_map(|r| r["from"].as_array().unwrap().clone())
            .collect();
        from.sort_by_key(|v| v.to_string());
        let mut want = vec![
            json!({"podSelector": {"matchLabels": {
                "app.kubernetes.io/name": "synapse", "mxstack.io/group": "main"}}}),
            json!({"podSelector": {"matchLabels": {"app.kubernetes.io/name": "li-console"}}}),
        ];
        if monitoring {
            want.push(json!({"namespaceSelector": {"matchLabels": {
                "kubernetes.io/metadata.name": "monitoring"}}}));
        }
        want.sort_by_key(|v| v.to_string());
        assert_eq!(from, want);
        for r in ingress {
            assert_eq!(r["ports"], json!([{"port": 8092, "protocol": "TCP"}]));
        }
        // Synapse main may reach it; a worker's policy names it nowhere.
        let main = find(&r, "NetworkPolicy", "allow-synapse-main").expect("allow-synapse-main");
        assert_eq!(
            peers(main, "egress", 8092),
            ["key-vault".to_string()].into()
        );
        let synapse = find(&r, "NetworkPolicy", "allow-synapse").unwrap();
        assert!(!peers(synapse, "egress", 8092).contains("key-vault"));
    }
}

/// Keys of a JSON object, sorted.
fn keys(v: &Value) -> BTreeSet<&str> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .map(String::as_str)
        .collect()
}

#[test]
fn the_li_console_runs_once_on_the_li_nodes_with_its_config_and_credentials() {
    for antivirus in [true, false] {
        let mut c = li_config(Tier::T1k);
        if antivirus {
            c.features.insert(Feature::Antivirus);
        }
        let (r, secrets) = render(&c);
        let addr = mxstack_k8s::KubernetesAddressing::new(&c);
        let d = find(&r, "Deployment", "li-console").expect("li-console");
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(d["spec"]["strategy"]["type"], "Recreate");
        let pod = &d["spec"]["template"];
        let spec = &pod["spec"];
        let ctr = &spec["containers"][0];
        // The key vault's image and command pattern, with its own service and config.
        let vault = find(&r, "Deployment", "key-vault").unwrap();
        assert_eq!(
            ctr["image"],
            vault["spec"]["template"]["spec"]["containers"][0]["image"]
        );
        assert_eq!(ctr["image"], c.images.mxstack.as_str());
        assert_eq!(
            command(pod),
            [
                "mxstack",
                "serve",
                "li-console",
                "--config",
                "/etc/mxstack/li-console.yaml"
            ]
        );
        for probe in ["readinessProbe", "livenessProbe"] {
            assert_eq!(ctr[probe]["httpGet"]["path"], "/health", "{probe}");
            assert_eq!(ctr[probe]["httpGet"]["port"], "http", "{probe}");
        }
        assert_eq!(
            ctr["ports"],
            json!([
                { "name": "http", "containerPort": 8093, "protocol": "TCP" },
                { "name": "metrics", "containerPort": 9094, "protocol": "TCP" }
            ])
        );
        assert_eq!(ctr["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(ctr["securityContext"]["allowPrivilegeEscalation"], false);
        assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
        assert_eq!(spec["automountServiceAccountToken"], false);
        assert_eq!(spec["nodeSelector"], json!({ "mxstack.io/role": "li" }));
        assert_eq!(
            spec["tolerations"],
            vault["spec"]["template"]["spec"]["tolerations"]
        );
        assert!(ctr["resources"]["limits"]["memory"].is_string());

        // Its config: console_config with the Kubernetes endpoints, mounted where the command
        // reads it.
        let cm = find(&r, "ConfigMap", "li-console-config").expect("li-console-config");
        let cfg = yaml(&cm["data"]["li-console.yaml"]);
        let pg = addr.li_postgres();
        let want = mxstack_topology::li_console::console_config(
            &mxstack_topology::li_console::ConsoleEndpoints {
                listen: "0.0.0.0:8093",
                database: "/data/li-console.sqlite3",
                server_name: "acme.test",
                replica: (&pg.host, 5432, "synapse_li"),
                key_vault_url: "http://key-vault.matrix.svc.cluster.local:8092",
                media: (
                    "http://seaweedfs-s3.matrix.svc.cluster.local:8333",
                    "synapse-media-li",
                    &c.media.region,
                ),
                clamd: antivirus.then(|| "clamav.matrix.svc.cluster.local:3310".to_string()),
                secure_cookies: true,
                metrics_listen: Some("0.0.0.0:9094"),
            },
        );
        assert_eq!(cfg, want);
        assert_eq!(pg.host, "li-pg-rw.matrix.svc.cluster.local");
        // The fields the console's ConsoleConfig reads (it denies unknown fields).
        let mut top: BTreeSet<&str> = [
            "listen",
            "database",
            "server_name",
            "replica",
            "key_vault",
            "vault_identity_env",
            "signing_key_env",
            "media",
            "secure_cookies",
            "metrics_listen",
        ]
        .into();
        if antivirus {
            top.insert("clamd");
        }
        assert_eq!(keys(&cfg), top);
        assert_eq!(
            keys(&cfg["replica"]),
            ["dbname", "host", "password_env", "port", "user"].into()
        );
        assert_eq!(
            keys(&cfg["key_vault"]),
            ["retrieval_api_key_env", "url"].into()
        );
        assert_eq!(
            keys(&cfg["media"]),
            [
                "access_key_env",
                "bucket",
                "endpoint",
                "region",
                "secret_key_env"
            ]
            .into()
        );
        assert_eq!(cfg["replica"]["user"], "li_console");
        assert_eq!(cfg["replica"]["port"], 5432);
        assert_eq!(cfg["secure_cookies"], true);
        assert_eq!(cfg["server_name"], c.domain.as_str());
        // Every credential is named by a variable the pod sets from the Secret holding it.
        let s3 = find(&r, "Secret", "synapse-li-s3-credentials").unwrap();
        for (field, secret) in [
            (
                &cfg["replica"]["password_env"],
                SecretName::LiConsoleDbPassword,
            ),
            (
                &cfg["key_vault"]["retrieval_api_key_env"],
                SecretName::KeyVaultRetrievalApiKey,
            ),
            (&cfg["vault_identity_env"], SecretName::KeyVaultAgeIdentity),
            (&cfg["signing_key_env"], SecretName::LiConsoleSigningKey),
            (
                &cfg["media"]["access_key_env"],
                SecretName::LiBrowsingS3AccessKey,
            ),
            (
                &cfg["media"]["secret_key_env"],
                SecretName::LiBrowsingS3SecretKey,
            ),
        ] {
            let var = field.as_str().unwrap();
            assert!(var.starts_with("MXSTACK_"), "{var}");
            let k = &env_of(pod, var)["valueFrom"]["secretKeyRef"];
            let s = find(&r, "Secret", k["name"].as_str().unwrap())
                .unwrap_or_else(|| panic!("{var}: Secret {} missing", k["name"]));
            assert_eq!(
                s["stringData"][k["key"].as_str().unwrap()],
                secrets.get(secret),
                "{var}"
            );
        }
        // Synapse LI's read-only identity, not a new one.
        assert_eq!(
            env_of(pod, "MXSTACK_LI_CONSOLE_S3_ACCESS_KEY")["valueFrom"]["secretKeyRef"]["name"],
            "synapse-li-s3-credentials"
        );
        assert_eq!(
            s3["stringData"]["ACCESS_KEY_ID"],
            secrets.get(SecretName::LiBrowsingS3AccessKey)
        );
        let vars: BTreeSet<&str> = ctr["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            vars,
            [
                "MXSTACK_LI_CONSOLE_DB_PASSWORD",
                "MXSTACK_KEY_VAULT_RETRIEVAL_API_KEY",
                "MXSTACK_LI_CONSOLE_VAULT_IDENTITY",
                "MXSTACK_LI_CONSOLE_SIGNING_KEY",
                "MXSTACK_LI_CONSOLE_S3_ACCESS_KEY",
                "MXSTACK_LI_CONSOLE_S3_SECRET_KEY",
            ]
            .into()
        );
        for e in ctr["env"].as_array().unwrap() {
            assert!(e.get("value").is_none(), "{e}: from a Secret only");
        }
        // No secret value in its config.
        let text = cm["data"]["li-console.yaml"].as_str().unwrap();
        for (k, v) in secrets.values() {
            assert!(!text.contains(v), "{k} in li-console-config");
        }
        let mount_path = |vol: &str| {
            ctr["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["name"] == vol)
                .unwrap_or_else(|| panic!("no mount {vol}"))
                .clone()
        };
        assert_eq!(mount_path("config")["mountPath"], "/etc/mxstack");
        assert_eq!(mount_path("config")["readOnly"], true);
        assert_eq!(mount_path("data")["mountPath"], "/data");
        let volume = |vol: &str| {
            spec["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["name"] == vol)
                .unwrap()
                .clone()
        };
        assert_eq!(volume("config")["configMap"]["name"], "li-console-config");
        assert_eq!(
            volume("data")["persistentVolumeClaim"]["claimName"],
            "li-console-data"
        );
        let pvc = find(&r, "PersistentVolumeClaim", "li-console-data").expect("PVC");
        assert_eq!(pvc["spec"]["accessModes"], json!(["ReadWriteOnce"]));
        // Its Service is the address the topology gives it.
        let svc = find(&r, "Service", "li-console").expect("Service");
        assert_eq!(svc["spec"]["ports"][0]["port"], 8093);
        assert_eq!(addr.li_console().port, 8093);
        assert_eq!(
            addr.li_console().host,
            "li-console.matrix.svc.cluster.local"
        );
        assert!(matches(
            &svc["spec"]["selector"],
            &pod["metadata"]["labels"]
        ));
        // Metrics on their own port, scraped with monitoring (the edge routes only "http").
        let ports: Vec<&Value> = svc["spec"]["ports"].as_array().unwrap().iter().collect();
        assert!(ports
            .iter()
            .any(|p| p["name"] == "metrics" && p["port"] == 9094));
        match find(&r, "ServiceMonitor", "li-console") {
            Some(sm) => {
                assert!(matches(
                    &sm["spec"]["selector"]["matchLabels"],
                    &svc["metadata"]["labels"]
                ));
                assert_eq!(sm["spec"]["endpoints"][0]["port"], "metrics");
            }
            None => panic!("li_config has monitoring: the console is scraped"),
        }
    }
    // Other media backends: the same endpoint and bucket Synapse LI reads.
    let mut minio = li_config(Tier::T1k);
    minio.media.backend = MediaBackend::MinioLegacy;
    minio.li.media_bucket = Some("evidence-media".into());
    let (r, _) = render(&minio);
    let cfg = yaml(&find(&r, "ConfigMap", "li-console-config").unwrap()["data"]["li-console.yaml"]);
    assert_eq!(
        cfg["media"]["endpoint"],
        "http://minio.matrix.svc.cluster.local:80"
    );
    assert_eq!(cfg["media"]["bucket"], "evidence-media");
}

#[test]
fn the_li_console_exists_only_with_li() {
    let with = li_config(Tier::T1k);
    let without = config(Tier::T1k, &[Feature::Antivirus, Feature::Monitoring]);
    for (c, on) in [(with, true), (without, false)] {
        let (r, _) = render(&c);
        for (k, n) in [
            ("Deployment", "li-console"),
            ("Service", "li-console"),
            ("ConfigMap", "li-console-config"),
            ("PersistentVolumeClaim", "li-console-data"),
            ("Secret", "li-console-db"),
            ("Secret", "li-console-vault-identity"),
            ("Secret", "li-console-signing-key"),
            ("NetworkPolicy", "allow-li-console"),
            ("HTTPRoute", "console-li"),
            ("SecurityPolicy", "console-li"),
            ("Certificate", "tls-console-li"),
        ] {
            assert_eq!(find(&r, k, n).is_some(), on, "{k} {n}");
        }
    }
}

#[test]
fn the_vault_identity_is_in_the_li_console_only() {
    let mut c = config(Tier::T1k, &all_features());
    c.li.allowed_cidrs = vec!["198.51.100.0/24".into()];
    for c in [c, dump_config()] {
        let (r, secrets) = render(&c);
        let identity = secrets.get(SecretName::KeyVaultAgeIdentity);
        // One Secret holds it ...
        let s = find(&r, "Secret", "li-console-vault-identity").unwrap();
        assert_eq!(s["type"], "Opaque");
        assert_eq!(s["stringData"], json!({ "identity": identity }));
        let holders: Vec<&str> = r
            .objects
            .iter()
            .map(|o| &o.value)
            .filter(|o| serde_json::to_string(o).unwrap().contains(identity))
            .map(name)
            .collect();
        assert_eq!(holders, ["li-console-vault-identity"]);
        // ... and only the console's pods read it; the key vault never does.
        let mut readers = BTreeSet::new();
        for (k, n, t) in pod_templates(&r) {
            let refs = referenced_secrets(t);
            if refs.iter().any(|(s, _)| s == "li-console-vault-identity") {
                readers.insert(format!("{k}/{n}"));
            }
            if app_of(t) == "key-vault" {
                assert!(
                    refs.iter()
                        .all(|(s, _)| s.starts_with("key-vault-") && s.ends_with("api-key")),
                    "{refs:?}"
                );
            }
        }
        assert_eq!(readers, ["Deployment/li-console".to_string()].into());
        // The vault has the public recipient only.
        let vault = find(&r, "ConfigMap", "key-vault-config").unwrap()["data"]["key-vault.yaml"]
            .as_str()
            .unwrap();
        assert!(vault.contains(&secrets.key_vault_recipient().unwrap()));
        // The signing key: its own Secret, read by the console only.
        let signing = secrets.get(SecretName::LiConsoleSigningKey);
        let s = find(&r, "Secret", "li-console-signing-key").unwrap();
        assert_eq!(s["stringData"], json!({ "signing_key": signing }));
        let readers: Vec<String> = pod_templates(&r)
            .into_iter()
            .filter(|(_, _, t)| {
                referenced_secrets(t)
                    .iter()
                    .any(|(s, _)| s == "li-console-signing-key" || s == "li-console-db")
            })
            .map(|(_, n, _)| n)
            .collect();
        assert_eq!(readers, ["li-console"]);
    }
}

#[test]
fn the_li_console_role_reads_the_replica_and_nothing_more() {
    let (r, secrets) = render(&li_config(Tier::T1k));
    let li = &find(&r, "Cluster", "li-pg").unwrap()["spec"];
    let roles = li["managed"]["roles"].as_array().unwrap();
    let role = roles
        .iter()
        .find(|r| r["name"] == "li_console")
        .expect("managed role li_console");
    assert_eq!(role["ensure"], "present");
    assert_eq!(role["login"], true);
    for right in ["superuser", "createdb", "createrole", "replication"] {
        assert_eq!(role[right], false, "{right}");
    }
    assert_eq!(role["inRoles"], json!(["pg_read_all_data"]));
    assert_eq!(role["passwordSecret"]["name"], "li-console-db");
    // CloudNativePG requires a basic-auth Secret whose username is the role's name.
    let s = find(&r, "Secret", "li-console-db").unwrap();
    assert_eq!(s["type"], "kubernetes.io/basic-auth");
    assert_eq!(s["stringData"]["username"], "li_console");
    assert_eq!(
        s["stringData"]["password"],
        secrets.get(SecretName::LiConsoleDbPassword)
    );
    assert_eq!(s["metadata"]["labels"]["cnpg.io/reload"], "true");
    // The same Secret is what the console logs in with.
    let d = find(&r, "Deployment", "li-console").unwrap();
    let k = &env_of(&d["spec"]["template"], "MXSTACK_LI_CONSOLE_DB_PASSWORD")["valueFrom"]
        ["secretKeyRef"];
    assert_eq!(k["name"], "li-console-db");
    assert_eq!(k["key"], "password");
    // The local runner grants the same.
    let sql = mxstack_topology::li_console::console_role_sql("pw");
    assert!(sql.contains("GRANT pg_read_all_data TO li_console"));
    assert!(sql.contains("NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION"));
    // The console reads the replica's database, which the role may log in to.
    let cfg = yaml(&find(&r, "ConfigMap", "li-console-config").unwrap()["data"]["li-console.yaml"]);
    assert_eq!(
        cfg["replica"]["dbname"],
        li["bootstrap"]["initdb"]["database"]
    );
    assert_eq!(cfg["replica"]["user"], role["name"]);
}

#[test]
fn network_policies_let_the_li_console_reach_the_replica_the_vault_and_li_media_only() {
    let set = |v: &[&str]| {
        v.iter()
            .map(|s| s.to_string())
            .collect::<BTreeSet<String>>()
    };
    for antivirus in [true, false] {
        let mut c = li_config(Tier::T1k);
        if antivirus {
            c.features.insert(Feature::Antivirus);
        }
        let (r, _) = render(&c);
        let policy = |n: &str| find(&r, "NetworkPolicy", n).unwrap_or_else(|| panic!("{n}"));
        let console = policy("allow-li-console");
        assert_eq!(
            console["spec"]["podSelector"]["matchLabels"],
            json!({ "app.kubernetes.io/name": "li-console" })
        );
        let egress: BTreeSet<(String, Vec<i64>)> = rules(console, "egress").into_iter().collect();
        let mut want: BTreeSet<(String, Vec<i64>)> = [
            ("cnpg:li-pg".to_string(), vec![5432]),
            ("key-vault".to_string(), vec![8092]),
            ("seaweedfs".to_string(), vec![8333]),
        ]
        .into();
        if antivirus {
            want.insert(("clamav".to_string(), vec![3310]));
        }
        assert_eq!(egress, want, "antivirus={antivirus}");
        // Only the edge reaches its pages; only Prometheus (with monitoring) its metrics.
        let ingress = rules(console, "ingress");
        assert!(
            ingress.contains(&("ns:envoy-gateway-system".to_string(), vec![8093])),
            "{ingress:?}"
        );
        assert!(
            ingress.iter().all(|(from, ports)| ports == &vec![8093]
                && from == "ns:envoy-gateway-system"
                || ports == &vec![9094] && from.contains("monitoring")),
            "{ingress:?}"
        );
        // The other ends let it in.
        assert!(peers(policy("allow-li-postgres"), "ingress", 5432).contains("li-console"));
        assert!(peers(policy("allow-seaweedfs"), "ingress", 8333).contains("li-console"));
        assert_eq!(
            peers(policy("allow-key-vault"), "ingress", 8092),
            if c.has(Feature::Monitoring) {
                set(&["synapse", "li-console", "ns:monitoring"])
            } else {
                set(&["synapse", "li-console"])
            }
        );
        if antivirus {
            assert!(peers(policy("allow-clamav"), "ingress", 3310).contains("li-console"));
        } else {
            assert!(find(&r, "NetworkPolicy", "allow-clamav").is_none());
        }
        // Nothing else may reach the console.
        for p in objects(&r, "NetworkPolicy") {
            if name(p) == "allow-li-console" {
                continue;
            }
            assert!(
                rules(p, "egress")
                    .iter()
                    .all(|(peer, _)| peer != "li-console"),
                "{}",
                name(p)
            );
        }
    }
    // Ingress mode: the Ingress controller's namespace; external S3: port 443 only.
    let mut c = li_config(Tier::T1k);
    c.ingress.mode = IngressMode::Ingress;
    c.media.backend = MediaBackend::S3;
    c.media.endpoint = Some("https://s3.eu-west-1.amazonaws.com".into());
    let (r, _) = render(&c);
    let console = find(&r, "NetworkPolicy", "allow-li-console").unwrap();
    assert_eq!(peers(console, "ingress", 8093), set(&["ns:traefik"]));
    for (peer, ports) in rules(console, "egress") {
        if peer.starts_with("ip:") {
            assert_eq!(ports, [443], "{peer}");
        }
    }
    let cfg = yaml(&find(&r, "ConfigMap", "li-console-config").unwrap()["data"]["li-console.yaml"]);
    assert_eq!(
        cfg["media"]["endpoint"],
        "https://s3.eu-west-1.amazonaws.com"
    );
}

#[test]
fn the_li_console_has_its_own_li_host_behind_the_allowed_networks() {
    let mut c = li_config(Tier::T1k);
    let (r, _) = render(&c);
    // Gateway: a listener, a certificate and a route to the console's Service.
    let gw = objects(&r, "Gateway").next().unwrap();
    let listener = gw["spec"]["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "https-console-li")
        .expect("listener https-console-li");
    assert_eq!(listener["hostname"], "console-li.acme.test");
    assert_eq!(
        listener["tls"]["certificateRefs"][0]["name"],
        "tls-console-li"
    );
    let cert = find(&r, "Certificate", "tls-console-li").unwrap();
    assert_eq!(cert["spec"]["dnsNames"], json!(["console-li.acme.test"]));
    let route = find(&r, "HTTPRoute", "console-li").unwrap();
    assert_eq!(route["spec"]["hostnames"], json!(["console-li.acme.test"]));
    assert_eq!(
        route["spec"]["rules"],
        json!([{ "matches": [{ "path": { "type": "PathPrefix", "value": "/" } }],
                 "backendRefs": [{ "name": "li-console", "port": 8093 }] }])
    );
    // Allowed networks, no basic-auth gate (the console's own login has a second factor).
    let p = find(&r, "SecurityPolicy", "console-li").unwrap();
    assert_eq!(p["spec"]["targetRefs"][0]["name"], "console-li");
    assert_eq!(p["spec"]["authorization"]["defaultAction"], "Deny");
    assert_eq!(
        p["spec"]["authorization"]["rules"][0]["principal"]["clientCIDRs"],
        json!(c.li.allowed_cidrs)
    );
    assert!(p["spec"].get("basicAuth").is_none());
    // Ingress mode: the Ingress names the allowed-networks middleware only.
    let mut ing = c.clone();
    ing.ingress.mode = IngressMode::Ingress;
    let (r, _) = render(&ing);
    let i = find(&r, "Ingress", "console-li").unwrap();
    assert_eq!(
        i["metadata"]["annotations"]["traefik.ingress.kubernetes.io/router.middlewares"],
        "matrix-li-allowed-networks@kubernetescrd"
    );
    assert_eq!(i["spec"]["rules"][0]["host"], "console-li.acme.test");
    let backend = &i["spec"]["rules"][0]["http"]["paths"][0];
    assert_eq!(backend["path"], "/");
    assert_eq!(
        backend["backend"]["service"],
        json!({ "name": "li-console", "port": { "number": 8093 } })
    );
    assert_eq!(i["spec"]["tls"][0]["secretName"], "tls-console-li");
    // The hostname follows `hostnames.li_console`.
    c.hostnames.li_console = Some("evidence.acme.test".into());
    let (r, _) = render(&c);
    let route = find(&r, "HTTPRoute", "console-li").unwrap();
    assert_eq!(route["spec"]["hostnames"], json!(["evidence.acme.test"]));
    assert!(find(&r, "SecurityPolicy", "console-li").is_some());
}

/// The LI cluster's backups (issue 22): its own Barman Cloud ObjectStore, bucket and S3
/// identity, the same plugin archiving and ScheduledBackup as main; main's identity cannot reach
/// the LI backups, and the LI backup identity reaches nothing else.
#[test]
fn the_li_cluster_is_archived_to_its_own_bucket_with_its_own_identity() {
    let c = li_config(Tier::T1k);
    let (r, secrets) = render(&c);
    let li = &find(&r, "Cluster", "li-pg").unwrap()["spec"];
    assert_eq!(
        li["plugins"],
        json!([{ "name": "barman-cloud.cloudnative-pg.io", "isWALArchiver": true,
                 "parameters": { "barmanObjectName": "li-pg-backups" } }])
    );
    let store = &find(&r, "ObjectStore", "li-pg-backups").unwrap()["spec"]["configuration"];
    assert_eq!(store["destinationPath"], "s3://pg-backups-li/li-pg");
    assert_eq!(
        store["s3Credentials"]["accessKeyId"]["name"],
        "li-pg-backup-s3-credentials"
    );
    assert_eq!(
        store["s3Credentials"]["secretAccessKey"]["name"],
        "li-pg-backup-s3-credentials"
    );
    let main_store = &find(&r, "ObjectStore", "main-pg-backups").unwrap()["spec"]["configuration"];
    assert_eq!(
        main_store["s3Credentials"]["accessKeyId"]["name"],
        "s3-credentials"
    );
    let sb = &find(&r, "ScheduledBackup", "li-pg-base").unwrap()["spec"];
    assert_eq!(sb["cluster"]["name"], "li-pg");
    assert_eq!(sb["method"], "plugin");
    assert_eq!(sb["schedule"], c.backup.schedule.as_str());
    assert!(find(&r, "ScheduledBackup", "main-pg-base").is_some());
    let creds = find(&r, "Secret", "li-pg-backup-s3-credentials").unwrap();
    assert_eq!(
        creds["stringData"]["ACCESS_KEY_ID"],
        secrets.get(SecretName::LiBackupS3AccessKey)
    );

    let s3 = find(&r, "Secret", "seaweedfs-s3-config").unwrap();
    let ids: Value = serde_json::from_str(s3["stringData"]["s3.json"].as_str().unwrap()).unwrap();
    let actions = |name: &str| -> Vec<String> {
        let i = ids["identities"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == name)
            .unwrap_or_else(|| panic!("{name}"));
        i["actions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        actions("li-pg-backup"),
        [
            "Read:pg-backups-li",
            "List:pg-backups-li",
            "Write:pg-backups-li"
        ]
    );
    let main = actions("mxstack");
    // Bucket-scoped: no global action, nothing on an LI bucket.
    assert!(main.iter().all(|a| a.contains(':')), "{main:?}");
    assert!(
        main.contains(&"Admin:synapse-media".to_string()),
        "{main:?}"
    );
    assert!(main.contains(&"Write:pg-backups".to_string()), "{main:?}");
    assert!(!main.iter().any(|a| a.ends_with("-li")), "{main:?}");

    let job = find(&r, "Job", "seaweedfs-buckets").unwrap();
    let script = job["spec"]["template"]["spec"]["containers"][0]["command"][2]
        .as_str()
        .unwrap();
    assert!(
        script.contains("s3.bucket.create -name pg-backups-li"),
        "{script}"
    );
    // Barman's retention deletes: the backup buckets are not versioned.
    assert!(!script.contains("versioning -name pg-backups"), "{script}");
}

/// `mxstack restore --kubernetes` with feature li: the LI cluster recovered from its own
/// archive, to its end (never a time: the LI side keeps the most evidence there), archiving
/// under its new name in the same ObjectStore, and `li-pg-rw` switched over to it.
#[test]
fn the_li_recovery_reads_the_li_archive_to_its_end() {
    let c = li_config(Tier::T1k);
    let secrets = mxstack_spec::Secrets::generate_all().unwrap();
    let t = Topology::build(&c);
    let objects = mxstack_k8s::li_postgres_recovery(&t, &secrets, "li-pg-restore");
    assert_eq!(objects.len(), 3);
    let cluster = &objects[0];
    assert_eq!(cluster["metadata"]["name"], "li-pg-restore");
    let recovery = &cluster["spec"]["bootstrap"]["recovery"];
    assert_eq!(
        recovery,
        &json!({ "source": "origin", "database": "synapse_li", "owner": "li_sync",
                 "secret": { "name": "li-db-credentials" } })
    );
    assert_eq!(
        cluster["spec"]["externalClusters"][0]["plugin"]["parameters"],
        json!({ "barmanObjectName": "li-pg-backups", "serverName": "li-pg" })
    );
    assert_eq!(
        cluster["spec"]["plugins"][0]["parameters"],
        json!({ "barmanObjectName": "li-pg-backups", "serverName": "li-pg-restore" })
    );
    // Still on the LI nodes, with the same managed roles.
    assert!(cluster["spec"]["affinity"]["nodeSelector"].is_object());
    assert_eq!(
        cluster["spec"]["managed"]["roles"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(objects[1]["kind"], "ScheduledBackup");
    assert_eq!(objects[1]["spec"]["cluster"]["name"], "li-pg-restore");
    let svc = &objects[2];
    assert_eq!(svc["metadata"]["name"], "li-pg-rw");
    assert_eq!(
        svc["spec"]["selector"],
        json!({ "cnpg.io/cluster": "li-pg-restore", "cnpg.io/instanceRole": "primary" })
    );
    // Without feature li there is nothing to recover.
    let plain = config(Tier::T1k, &[]);
    let t = Topology::build(&plain);
    assert!(mxstack_k8s::li_postgres_recovery(&t, &secrets, "li-pg-restore").is_empty());
}
