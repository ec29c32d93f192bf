//! Rules on rendered Kubernetes objects (as JSON values, so they also run on manifests an operator
//! hands us from an existing deployment).

use std::collections::{BTreeMap, BTreeSet};

use mxstack_spec::{placeholder_reason, Secrets};
use mxstack_topology::escrow::ESCROW_MODULE;
use serde_json::Value;

use crate::Finding;

fn kind(o: &Value) -> &str {
    o.get("kind").and_then(Value::as_str).unwrap_or("")
}
fn name(o: &Value) -> &str {
    o.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
}
fn id(o: &Value) -> String {
    format!("{}/{}", kind(o), name(o))
}

/// The pod template of a workload, with its labels.
pub fn pod_template(o: &Value) -> Option<&Value> {
    match kind(o) {
        "Deployment" | "StatefulSet" | "DaemonSet" | "Job" | "ReplicaSet" => {
            o.pointer("/spec/template")
        }
        "CronJob" => o.pointer("/spec/jobTemplate/spec/template"),
        _ => None,
    }
}

fn containers(pod_spec: &Value) -> impl Iterator<Item = &Value> {
    ["containers", "initContainers"]
        .into_iter()
        .flat_map(move |k| {
            pod_spec
                .get(k)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
}

/// Every string leaf in a value.
fn strings<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::String(s) => out.push(s),
        Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        Value::Object(m) => m.iter().for_each(|(k, x)| {
            out.push(k);
            strings(x, out)
        }),
        _ => {}
    }
}

pub fn check(objects: &[Value], secrets: Option<&Secrets>) -> Vec<Finding> {
    let mut out = Vec::new();
    secret_leaks(objects, secrets, &mut out);
    placeholders(objects, &mut out);
    selectors(objects, &mut out);
    let pods = pods(objects);
    service_ports(objects, &pods, &mut out);
    policy_ports(objects, &pods, &mut out);
    references(objects, &mut out);
    router_and_templating(objects, &mut out);
    backups_and_policies(objects, &mut out);
    synapse_paths_mounted(objects, &mut out);
    li_isolation(objects, secrets, &mut out);
    escrow_chain(objects, &mut out);
    push_credentials(objects, &mut out);
    monitoring_metrics(objects, &mut out);
    out
}

/// Issue 21: every alert and dashboard query names only metrics that an exporter of this
/// render exposes: a component's ServiceMonitor or PodMonitor is rendered, or the platform's.
fn monitoring_metrics(objects: &[Value], out: &mut Vec<Finding>) {
    let monitors: Vec<&str> = objects
        .iter()
        .filter(|o| matches!(kind(o), "ServiceMonitor" | "PodMonitor"))
        .map(name)
        .collect();
    let scraped = |c: &mxstack_topology::registry::Component| {
        monitors.contains(&mxstack_monitoring::monitor_name(c))
    };
    let exposed =
        mxstack_monitoring::catalog::exposed(|e| mxstack_monitoring::exporter_present(e, &scraped));
    let mut exprs: Vec<(String, String, String)> = Vec::new();
    for o in objects.iter().filter(|o| kind(o) == "PrometheusRule") {
        for rule in o
            .pointer("/spec/groups")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        {
            let what = format!("alert {}", rule["alert"].as_str().unwrap_or("?"));
            if let Some(e) = rule["expr"].as_str() {
                exprs.push((format!("PrometheusRule/{}", name(o)), what, e.to_string()));
            }
        }
    }
    exprs.extend(mxstack_monitoring::dashboards::rendered_queries(objects));
    for (on, what, expr) in &exprs {
        for e in mxstack_monitoring::check([(what.clone(), expr.as_str())], &exposed) {
            out.push(Finding::new("MX-OUT-021", e.to_string()).on(on.clone()));
        }
    }
}

/// Issue 20 (push): every credential file Sygnal's config names is a key of a Secret mounted at
/// that directory in Sygnal's pods, with a value. Sygnal refuses to start otherwise.
fn push_credentials(objects: &[Value], out: &mut Vec<Finding>) {
    let Some(config) = objects
        .iter()
        .find(|o| kind(o) == "ConfigMap" && name(o) == "sygnal-config")
        .and_then(|o| o.pointer("/data/sygnal.yaml")?.as_str())
        .and_then(|t| serde_saphyr::from_str::<Value>(t).ok())
    else {
        return; // feature push is off
    };
    // (mount path, Secret) of Sygnal's pod.
    let mounts: Vec<(String, String)> = objects
        .iter()
        .filter(|o| kind(o) == "Deployment" && name(o) == "sygnal")
        .filter_map(pod_template)
        .flat_map(|t| {
            let volumes = t.pointer("/spec/volumes").and_then(Value::as_array);
            let secret_of = |vol: &str| {
                volumes?
                    .iter()
                    .find(|v| v["name"] == vol)?
                    .pointer("/secret/secretName")?
                    .as_str()
                    .map(str::to_string)
            };
            t.pointer("/spec/containers/0/volumeMounts")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|m| {
                    Some((
                        m["mountPath"].as_str()?.to_string(),
                        secret_of(m["name"].as_str()?)?,
                    ))
                })
                .collect::<Vec<_>>()
        })
        .collect();
    for (app, entry) in config["apps"].as_object().into_iter().flatten() {
        for field in ["keyfile", "certfile", "service_account_file"] {
            let Some(path) = entry[field].as_str() else {
                continue;
            };
            let (dir, file) = path.rsplit_once('/').unwrap_or(("", path));
            let present = mounts.iter().any(|(m, secret)| {
                m == dir
                    && objects.iter().any(|o| {
                        kind(o) == "Secret"
                            && name(o) == secret
                            && o.pointer(&format!("/stringData/{file}"))
                                .and_then(Value::as_str)
                                .is_some_and(|v| !v.trim().is_empty())
                    })
            });
            if !present {
                out.push(
                    Finding::new(
                        "MX-OUT-020",
                        format!("app `{app}`: {field} {path} is in no Secret mounted into Sygnal (secrets.yaml has no `push_credential.{app}`)"),
                    )
                    .on("ConfigMap/sygnal-config".to_string()),
                );
            }
        }
    }
}

/// Seed 004 2.8 and 4.3: the key vault, the Synapse module feeding it and the console reading it
/// were separate hand-made pieces whose names and keys disagreed (or did not exist). Here: main's
/// escrow module and the console name the same vault URL, which a Service serves; the identity
/// the console opens keys with belongs to the vault's recipient; the key the console signs warrant
/// claims with is the one the vault checks them with.
fn escrow_chain(objects: &[Value], out: &mut Vec<Finding>) {
    let configmap = |n: &str| {
        objects
            .iter()
            .find(|o| kind(o) == "ConfigMap" && name(o) == n)
    };
    let yaml_in = |n: &str, key: &str| -> Option<Value> {
        let text = configmap(n)?.pointer(&format!("/data/{key}"))?.as_str()?;
        serde_saphyr::from_str::<Value>(text).ok()
    };
    let secret_value = |n: &str, key: &str| -> Option<String> {
        objects
            .iter()
            .find(|o| kind(o) == "Secret" && name(o) == n)?
            .pointer(&format!("/stringData/{key}"))?
            .as_str()
            .map(str::to_string)
    };
    let Some(vault) = yaml_in("key-vault-config", "key-vault.yaml") else {
        return; // no key vault: feature li is off
    };
    let mut problem = |what: String| {
        out.push(Finding::new("MX-OUT-013", what).on("ConfigMap/key-vault-config".to_string()))
    };
    // Main's escrow module, and the vault URL it posts to.
    let module_url = yaml_in("synapse-config", "homeserver.yaml").and_then(|hs| {
        hs.get("modules")?
            .as_array()?
            .iter()
            .find(|m| m["module"] == ESCROW_MODULE)
            .and_then(|m| m.pointer("/config/vault_url")?.as_str().map(str::to_string))
    });
    let Some(module_url) = module_url else {
        problem(format!(
            "Synapse main (ConfigMap synapse-config) does not load {ESCROW_MODULE}: no client can escrow a key"
        ));
        return;
    };
    let served = module_url
        .strip_prefix("http://")
        .and_then(|hp| hp.split_once(':'))
        .is_some_and(|(host, port)| {
            let svc = host.split('.').next().unwrap_or("");
            objects.iter().any(|o| {
                kind(o) == "Service"
                    && name(o) == svc
                    && o.pointer("/spec/ports")
                        .and_then(Value::as_array)
                        .is_some_and(|ps| {
                            ps.iter()
                                .any(|p| p["port"].as_u64() == port.parse::<u64>().ok())
                        })
            })
        });
    if !served {
        problem(format!(
            "the escrow module posts to {module_url}, which no Service serves"
        ));
    }
    let Some(console) = yaml_in("li-console-config", "li-console.yaml") else {
        problem("the key vault is rendered without the LI console that reads it".into());
        return;
    };
    if console.pointer("/key_vault/url").and_then(Value::as_str) != Some(module_url.as_str()) {
        problem(format!(
            "the LI console retrieves from {}, the escrow module stores at {module_url}",
            console.pointer("/key_vault/url").unwrap_or(&Value::Null)
        ));
    }
    let recipient = vault.pointer("/recipients/vault").and_then(Value::as_str);
    let identity_recipient = secret_value("li-console-vault-identity", "identity")
        .and_then(|i| mxstack_spec::age_recipient(&i).ok());
    if identity_recipient.is_none() || identity_recipient.as_deref() != recipient {
        problem(
            "the LI console's identity (Secret li-console-vault-identity) does not open what the key vault encrypts to (recipients.vault)".into(),
        );
    }
    let signer = vault.get("warrant_signer").and_then(Value::as_str);
    let console_key = secret_value("li-console-signing-key", "signing_key")
        .and_then(|k| mxstack_spec::ed25519_public_key(&k).ok());
    if signer.is_none() || console_key.as_deref() != signer {
        problem(
            "the key vault's warrant_signer is not the LI console's key (Secret li-console-signing-key): every retrieval would be refused, or claims checked against the wrong key".into(),
        );
    }
}

fn secret_leaks(objects: &[Value], secrets: Option<&Secrets>, out: &mut Vec<Finding>) {
    let Some(secrets) = secrets else { return };
    for o in objects.iter().filter(|o| kind(o) != "Secret") {
        let mut leaves = Vec::new();
        strings(o, &mut leaves);
        for (secret_name, value) in secrets.values() {
            // The signing key's public key id is not secret; its seed (last field) is.
            let needle = value.rsplit(' ').next().unwrap_or(value);
            if needle.len() >= 8 && leaves.iter().any(|s| s.contains(needle)) {
                // Never print the value itself.
                out.push(
                    Finding::new(
                        "MX-OUT-001",
                        format!("the value of `{secret_name}` appears in {}", id(o)),
                    )
                    .on(id(o)),
                );
            }
        }
    }
}

fn placeholders(objects: &[Value], out: &mut Vec<Finding>) {
    for o in objects {
        let mut leaves = Vec::new();
        strings(o, &mut leaves);
        for s in leaves {
            for line in s.lines() {
                let lower = line.to_ascii_lowercase();
                let hit = lower.contains("changeme")
                    || lower.contains("change_me")
                    || ["example.com", "example.org", "example.net"]
                        .iter()
                        .any(|d| lower.contains(d));
                if hit && placeholder_reason(line).is_some() {
                    out.push(
                        Finding::new("MX-OUT-002", format!("`{}` in {}", line.trim(), id(o)))
                            .on(id(o)),
                    );
                }
            }
        }
    }
}

fn matches(selector: &serde_json::Map<String, Value>, labels: Option<&Value>) -> bool {
    let Some(labels) = labels.and_then(Value::as_object) else {
        return false;
    };
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn selectors(objects: &[Value], out: &mut Vec<Finding>) {
    let pod_labels: Vec<&Value> = objects
        .iter()
        .filter_map(|o| pod_template(o).and_then(|t| t.pointer("/metadata/labels")))
        .collect();
    for svc in objects.iter().filter(|o| kind(o) == "Service") {
        let Some(sel) = svc.pointer("/spec/selector").and_then(Value::as_object) else {
            continue;
        };
        // Operators create these pods; the Cluster or Tenant satisfies the selector.
        if OPERATOR_POD_LABELS.iter().any(|l| sel.contains_key(*l)) {
            continue;
        }
        if !pod_labels.iter().any(|l| matches(sel, Some(l))) {
            out.push(
                Finding::new("MX-OUT-003", format!("{} selects {:?}", id(svc), sel)).on(id(svc)),
            );
        }
    }
}

/// Labels by which operators find the pods they make: CloudNativePG a Cluster's instances, the
/// MinIO operator a Tenant's servers. Those pods and their container ports are not in the render
/// (the operator writes them, and they change between operator versions), so a Service or
/// NetworkPolicy selecting them is only checked when a rendered pod matches as well; the ports
/// towards them are pinned by the network flow tests instead.
const OPERATOR_POD_LABELS: [&str; 2] = ["cnpg.io/cluster", "v1.min.io/tenant"];

fn arr(v: Option<&Value>) -> impl Iterator<Item = &Value> {
    v.and_then(Value::as_array).into_iter().flatten()
}

/// Whether a LabelSelector (`matchLabels` and `matchExpressions`) selects `labels`; `{}` selects
/// everything.
fn selects(selector: &Value, labels: &Value) -> bool {
    let by_labels = selector
        .get("matchLabels")
        .and_then(Value::as_object)
        .is_none_or(|m| m.iter().all(|(k, v)| labels.get(k) == Some(v)));
    by_labels
        && arr(selector.get("matchExpressions")).all(|e| {
            let label = e
                .get("key")
                .and_then(Value::as_str)
                .and_then(|k| labels.get(k))
                .and_then(Value::as_str);
            let listed = |l: &str| arr(e.get("values")).any(|v| v.as_str() == Some(l));
            match e.get("operator").and_then(Value::as_str) {
                Some("In") => label.is_some_and(listed),
                Some("NotIn") => label.is_none_or(|l| !listed(l)),
                Some("Exists") => label.is_some(),
                Some("DoesNotExist") => label.is_none(),
                _ => false,
            }
        })
}

fn names_operator_label(selector: &Value) -> bool {
    let keys = selector
        .get("matchLabels")
        .and_then(Value::as_object)
        .into_iter()
        .flat_map(|m| m.keys().map(String::as_str))
        .chain(arr(selector.get("matchExpressions")).filter_map(|e| e.get("key")?.as_str()));
    keys.into_iter().any(|k| OPERATOR_POD_LABELS.contains(&k))
}

/// A port a pod template declares.
struct Declared<'a> {
    name: Option<&'a str>,
    number: u64,
    protocol: &'a str,
}

/// A rendered pod template: the workload that makes it, its labels, its declared ports.
struct Pod<'a> {
    owner: String,
    labels: &'a Value,
    ports: Vec<Declared<'a>>,
}

/// Both sides default to TCP when they name no protocol.
fn protocol_of(port: &Value) -> &str {
    port.get("protocol")
        .and_then(Value::as_str)
        .unwrap_or("TCP")
}

impl Pod<'_> {
    /// Kubernetes resolves a port name together with the protocol (a Service's `udp` and `tcp`
    /// ports may share a name on different protocols).
    fn has_name(&self, name: &str, protocol: &str) -> bool {
        self.ports
            .iter()
            .any(|p| p.name == Some(name) && p.protocol == protocol)
    }
    fn has_number(&self, number: u64, protocol: &str) -> bool {
        self.ports
            .iter()
            .any(|p| p.number == number && p.protocol == protocol)
    }
    /// A port given as a name or a number (Services and policies use the same IntOrString).
    fn has(&self, port: &Value, protocol: &str) -> bool {
        match port {
            Value::String(name) => self.has_name(name, protocol),
            n => n.as_u64().is_some_and(|n| self.has_number(n, protocol)),
        }
    }
}

/// Every pod template in the render. Ports count on the containers that serve: regular ones and
/// native sidecars (`restartPolicy: Always`); a plain init container has exited before traffic
/// arrives.
fn pods(objects: &[Value]) -> Vec<Pod<'_>> {
    objects
        .iter()
        .filter_map(|o| {
            let t = pod_template(o)?;
            let spec = t.get("spec")?;
            let sidecars =
                arr(spec.get("initContainers")).filter(|c| c["restartPolicy"] == "Always");
            let ports = arr(spec.get("containers"))
                .chain(sidecars)
                .flat_map(|c| arr(c.get("ports")))
                .filter_map(|p| {
                    Some(Declared {
                        name: p.get("name").and_then(Value::as_str),
                        number: p.get("containerPort")?.as_u64()?,
                        protocol: protocol_of(p),
                    })
                })
                .collect();
            Some(Pod {
                owner: id(o),
                labels: t.pointer("/metadata/labels").unwrap_or(&Value::Null),
                ports,
            })
        })
        .collect()
}

fn port_text(port: &Value, protocol: &str) -> String {
    match port {
        Value::String(name) => format!("`{name}` ({protocol})"),
        n => format!("{n}/{protocol}"),
    }
}

/// Seed 003's verification ("all services should have endpoints"): a pod that lacks a named
/// targetPort is left out of the Service's endpoints, and a number no container declares is a
/// port nothing was written to listen on. Every pod the Service selects must declare each target.
fn service_ports(objects: &[Value], pods: &[Pod], out: &mut Vec<Finding>) {
    for svc in objects.iter().filter(|o| kind(o) == "Service") {
        let Some(sel) = svc.pointer("/spec/selector").and_then(Value::as_object) else {
            continue;
        };
        // A Service that selects no rendered pod is MX-OUT-003's finding, or an operator's.
        let targets: Vec<&Pod> = pods
            .iter()
            .filter(|p| !sel.is_empty() && matches(sel, Some(p.labels)))
            .collect();
        for sp in arr(svc.pointer("/spec/ports")) {
            let protocol = protocol_of(sp);
            let Some(target) = sp.get("targetPort").or_else(|| sp.get("port")) else {
                continue;
            };
            for pod in targets.iter().filter(|p| !p.has(target, protocol)) {
                let port = port_text(target, protocol);
                out.push(
                    Finding::new(
                        "MX-OUT-015",
                        format!(
                            "{} targets port {port}, which the pods of {} do not declare",
                            id(svc),
                            pod.owner
                        ),
                    )
                    .on(id(svc))
                    .fix(format!(
                        "declare containerPort {port} in {}, or point the Service's targetPort at a port it declares",
                        pod.owner
                    )),
                );
            }
        }
    }
}

/// Whether a policy applies in a direction: as `policyTypes` says, or (without it) ingress always
/// and egress when the policy has an egress section.
fn applies(policy: &Value, direction: &str) -> bool {
    match policy
        .pointer("/spec/policyTypes")
        .and_then(Value::as_array)
    {
        Some(types) => types.iter().any(|t| t == direction),
        None => direction == "Ingress" || policy.pointer("/spec/egress").is_some(),
    }
}

/// The pod selector of an egress peer that names pods of the policy's own namespace. Everything
/// else is skipped, since the render holds neither those pods nor their ports: ipBlocks (the
/// Kubernetes API, the internet) and namespaceSelectors (DNS in kube-system, operators, the edge,
/// monitoring), unless the namespaceSelector picks exactly the policy's own namespace by name.
fn in_namespace_pods<'a>(peer: &'a Value, namespace: Option<&str>) -> Option<&'a Value> {
    let pods = peer.get("podSelector")?;
    let Some(ns_selector) = peer.get("namespaceSelector") else {
        return Some(pods);
    };
    let named = |n: &str| serde_json::json!({ "kubernetes.io/metadata.name": n });
    // No namespace is named "": a selector that picks it picks namespaces beyond ours.
    let own = namespace
        .is_some_and(|ns| selects(ns_selector, &named(ns)) && !selects(ns_selector, &named("")));
    own.then_some(pods)
}

/// Seed 004 3.5 and seed 000's "NetworkPolicy blocking traffic": under default-deny, a policy port
/// that the selected pods do not serve opens nothing, and the flow it was written for stays
/// blocked. A numeric port (or range) must be declared by some selected pod, since one policy may
/// cover pods of which only some serve a port; a named port by every selected pod, since each pod
/// resolves the name on its own and one without it is not opened at all.
fn policy_ports(objects: &[Value], pods: &[Pod], out: &mut Vec<Finding>) {
    for pol in objects.iter().filter(|o| kind(o) == "NetworkPolicy") {
        let start = out.len();
        let namespace = pol.pointer("/metadata/namespace").and_then(Value::as_str);
        if applies(pol, "Ingress") {
            // Ingress ports are the policy's own pods' ports; the `from` peers are only sources.
            let own = pol.pointer("/spec/podSelector").unwrap_or(&Value::Null);
            for rule in arr(pol.pointer("/spec/ingress")) {
                policy_rule(pol, "ingress to", own, rule.get("ports"), pods, out);
            }
        }
        if applies(pol, "Egress") {
            for rule in arr(pol.pointer("/spec/egress")) {
                // A rule without peers goes anywhere: nothing in the render to hold it to.
                for peer in arr(rule.get("to")) {
                    if let Some(sel) = in_namespace_pods(peer, namespace) {
                        policy_rule(pol, "egress to", sel, rule.get("ports"), pods, out);
                    }
                }
            }
        }
        // Several rules of one policy may repeat a port (one per peer): report it once.
        let mut seen = BTreeSet::new();
        let mine: Vec<Finding> = out.split_off(start);
        out.extend(mine.into_iter().filter(|f| seen.insert(f.message.clone())));
    }
}

/// One rule's ports against the pods `selector` picks.
fn policy_rule(
    pol: &Value,
    direction: &str,
    selector: &Value,
    ports: Option<&Value>,
    pods: &[Pod],
    out: &mut Vec<Finding>,
) {
    let targets: Vec<&Pod> = pods
        .iter()
        .filter(|p| selects(selector, p.labels))
        .collect();
    let problems = if targets.is_empty() {
        if names_operator_label(selector) {
            return;
        }
        vec![(
            format!("allows {direction} pods {selector}, but no rendered pod has those labels"),
            "make the selector match the labels of the workload's pod template".to_string(),
        )]
    } else {
        arr(ports)
            .flat_map(|p| port_gaps(p, &targets))
            .map(|(what, fix)| (format!("allows {direction} {what}"), fix))
            .collect()
    };
    for (message, fix) in problems {
        out.push(
            Finding::new("MX-OUT-014", format!("{} {message}", id(pol)))
                .on(id(pol))
                .fix(fix),
        );
    }
}

/// What of one policy port the `targets` do not declare, as (what, fix).
fn port_gaps(p: &Value, targets: &[&Pod]) -> Vec<(String, String)> {
    let protocol = protocol_of(p);
    match p.get("port") {
        // No port: every port of the protocol.
        None => vec![],
        Some(Value::String(name)) => targets
            .iter()
            .filter(|t| !t.has_name(name, protocol))
            .map(|t| {
                (
                    format!("port `{name}` ({protocol}), which the pods of {} do not name", t.owner),
                    format!("name a containerPort `{name}` ({protocol}) in {}, or use a port name it declares", t.owner),
                )
            })
            .collect(),
        Some(n) => {
            let Some(from) = n.as_u64() else {
                return vec![];
            };
            let to = p.get("endPort").and_then(Value::as_u64).unwrap_or(from);
            let missing: Vec<u64> = (from..=to)
                .filter(|n| !targets.iter().any(|t| t.has_number(*n, protocol)))
                .collect();
            let Some(first) = missing.first() else {
                return vec![];
            };
            let which = if from == to {
                format!("port {from}/{protocol}")
            } else {
                let count = missing.len();
                format!("ports {from}-{to}/{protocol} ({count} of them, first {first})")
            };
            let owners: Vec<&str> = targets.iter().map(|t| t.owner.as_str()).collect();
            vec![(
                format!("{which}, which none of the selected pods declares ({})", owners.join(", ")),
                format!("declare containerPort {first}/{protocol} in the workload that serves it, or allow the port it listens on"),
            )]
        }
    }
}

fn data_keys(o: &Value) -> BTreeSet<String> {
    ["data", "stringData", "binaryData"]
        .iter()
        .filter_map(|k| o.get(k).and_then(Value::as_object))
        .flat_map(|m| m.keys().cloned())
        .collect()
}

fn references(objects: &[Value], out: &mut Vec<Finding>) {
    let mut have: BTreeMap<(&str, &str), BTreeSet<String>> = BTreeMap::new();
    let mut superusers: Vec<String> = Vec::new();
    for o in objects {
        if matches!(kind(o), "Secret" | "ConfigMap") {
            have.insert((kind(o), name(o)), data_keys(o));
        }
        // CloudNativePG writes `<cluster>-superuser` when superuser access is on.
        if kind(o) == "Cluster"
            && o.pointer("/spec/enableSuperuserAccess")
                .and_then(Value::as_bool)
                == Some(true)
        {
            superusers.push(format!("{}-superuser", name(o)));
        }
        // cert-manager writes the Secret a Certificate names once the certificate is issued.
        if kind(o) == "Certificate" {
            if let Some(secret) = o.pointer("/spec/secretName").and_then(Value::as_str) {
                have.insert(
                    ("Secret", secret),
                    ["tls.crt", "tls.key", "ca.crt"].map(String::from).into(),
                );
            }
        }
    }
    for s in &superusers {
        have.insert(
            ("Secret", s.as_str()),
            ["username", "password"].map(String::from).into(),
        );
    }
    let mut check_ref =
        |owner: &Value, k: &'static str, n: &str, key: Option<&str>, optional: bool| {
            if optional {
                return;
            }
            match have.get(&(k, n)) {
                None => out.push(
                    Finding::new(
                        "MX-OUT-004",
                        format!("{} references {k} `{n}`, which is not rendered", id(owner)),
                    )
                    .on(id(owner)),
                ),
                Some(keys) => {
                    if let Some(key) = key {
                        if !keys.contains(key) {
                            out.push(
                                Finding::new(
                                    "MX-OUT-004",
                                    format!(
                                        "{} references key `{key}` of {k} `{n}`, which it lacks",
                                        id(owner)
                                    ),
                                )
                                .on(id(owner)),
                            );
                        }
                    }
                }
            }
        };
    for o in objects {
        if let Some(spec) = pod_template(o).and_then(|t| t.get("spec")) {
            for v in spec
                .get("volumes")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                for (field, k, name_field) in [
                    ("secret", "Secret", "secretName"),
                    ("configMap", "ConfigMap", "name"),
                ] {
                    if let Some(src) = v.get(field) {
                        let n = src.get(name_field).and_then(Value::as_str).unwrap_or("");
                        let optional = src
                            .get("optional")
                            .and_then(Value::as_bool)
                            .unwrap_or(false);
                        check_ref(o, k, n, None, optional);
                        for item in src
                            .get("items")
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                        {
                            check_ref(o, k, n, item.get("key").and_then(Value::as_str), optional);
                        }
                    }
                }
            }
            for c in containers(spec) {
                for e in c.get("env").and_then(Value::as_array).into_iter().flatten() {
                    for (field, k) in [("secretKeyRef", "Secret"), ("configMapKeyRef", "ConfigMap")]
                    {
                        if let Some(r) = e.pointer(&format!("/valueFrom/{field}")) {
                            let optional =
                                r.get("optional").and_then(Value::as_bool).unwrap_or(false);
                            check_ref(
                                o,
                                k,
                                r.get("name").and_then(Value::as_str).unwrap_or(""),
                                r.get("key").and_then(Value::as_str),
                                optional,
                            );
                        }
                    }
                }
                for e in c
                    .get("envFrom")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    for (field, k) in [("secretRef", "Secret"), ("configMapRef", "ConfigMap")] {
                        if let Some(r) = e.get(field) {
                            check_ref(
                                o,
                                k,
                                r.get("name").and_then(Value::as_str).unwrap_or(""),
                                None,
                                false,
                            );
                        }
                    }
                }
            }
        }
        // CloudNativePG references its bootstrap secret, managed roles' passwords and bootstrap
        // SQL by name.
        if kind(o) == "Cluster" {
            if let Some(n) = o
                .pointer("/spec/bootstrap/initdb/secret/name")
                .and_then(Value::as_str)
            {
                check_ref(o, "Secret", n, Some("password"), false);
            }
            for role in o
                .pointer("/spec/managed/roles")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(n) = role.pointer("/passwordSecret/name").and_then(Value::as_str) {
                    check_ref(o, "Secret", n, Some("username"), false);
                    check_ref(o, "Secret", n, Some("password"), false);
                }
            }
            for (field, k) in [("configMapRefs", "ConfigMap"), ("secretRefs", "Secret")] {
                for r in o
                    .pointer(&format!(
                        "/spec/bootstrap/initdb/postInitApplicationSQLRefs/{field}"
                    ))
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    check_ref(
                        o,
                        k,
                        r.get("name").and_then(Value::as_str).unwrap_or(""),
                        r.get("key").and_then(Value::as_str),
                        false,
                    );
                }
            }
        }
    }
}

fn router_and_templating(objects: &[Value], out: &mut Vec<Finding>) {
    for o in objects.iter().filter(|o| kind(o) == "ConfigMap") {
        for (key, v) in o
            .get("data")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            let text = v.as_str().unwrap_or("");
            if key.ends_with(".cfg") {
                for line in text.lines() {
                    let t = line.trim_start();
                    if t.starts_with("nameserver ") {
                        out.push(
                            Finding::new("MX-OUT-005", format!("{} {key}: `{t}`", id(o))).on(id(o)),
                        );
                    }
                }
            }
        }
    }
    for o in objects {
        let Some(spec) = pod_template(o).and_then(|t| t.get("spec")) else {
            continue;
        };
        for c in spec
            .get("initContainers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let mut leaves = Vec::new();
            strings(c, &mut leaves);
            if leaves
                .iter()
                .any(|s| s.contains("envsubst") || s.contains("sed -i"))
            {
                out.push(
                    Finding::new(
                        "MX-OUT-008",
                        format!("an init container of {} rewrites config", id(o)),
                    )
                    .on(id(o)),
                );
            }
        }
    }
    for o in objects
        .iter()
        .filter(|o| kind(o) == "HorizontalPodAutoscaler")
    {
        let target = o
            .pointer("/spec/scaleTargetRef/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !(target.starts_with("synapse-synchrotron") || target.starts_with("synapse-generic")) {
            out.push(Finding::new("MX-OUT-010", format!("{} scales {target}", id(o))).on(id(o)));
        }
    }
    for o in objects.iter().filter(|o| kind(o) == "ConfigMap") {
        let Some(cfg) = o.pointer("/data/config.json").and_then(Value::as_str) else {
            continue;
        };
        for outside in [
            "vector.im",
            "scalar.",
            "element.io",
            "meet.element",
            "matrix.org",
        ] {
            if cfg.contains(outside) {
                out.push(
                    Finding::new(
                        "MX-OUT-009",
                        format!("{} config.json mentions {outside}", id(o)),
                    )
                    .on(id(o)),
                );
            }
        }
    }
}

/// An absent rule list and an empty one both allow nothing.
fn no_rules(rules: Option<&Value>) -> bool {
    rules.is_none_or(|r| r.as_array().is_some_and(Vec::is_empty))
}

fn backups_and_policies(objects: &[Value], out: &mut Vec<Finding>) {
    for o in objects.iter().filter(|o| kind(o) == "Cluster") {
        if o.pointer("/spec/backup/barmanObjectStore").is_some() {
            out.push(
                Finding::new(
                    "MX-OUT-006",
                    format!("{} uses spec.backup.barmanObjectStore", id(o)),
                )
                .on(id(o)),
            );
        }
    }
    let has_workloads = objects.iter().any(|o| pod_template(o).is_some());
    let default_deny = objects.iter().any(|o| {
        kind(o) == "NetworkPolicy"
            && o.pointer("/spec/podSelector")
                .and_then(Value::as_object)
                .is_some_and(|m| {
                    m.is_empty()
                        || m.values()
                            .all(|v| v.as_object().is_some_and(|x| x.is_empty()))
                })
            && o.pointer("/spec/policyTypes")
                .and_then(Value::as_array)
                .is_some_and(|t| t.len() == 2)
            && no_rules(o.pointer("/spec/ingress"))
            && no_rules(o.pointer("/spec/egress"))
    });
    if has_workloads && !default_deny {
        out.push(Finding::new(
            "MX-OUT-007",
            "no NetworkPolicy denies all ingress and egress by default",
        ));
    }
}

/// Pods whose mounted `*.yaml` configs name files by absolute `*_path` keys: Synapse, Synapse
/// LI, and the content scanner (`request_secret_path`).
const PATH_READING_APPS: [&str; 3] = ["synapse", "synapse-li", "content-scanner"];

/// Every file a Synapse or content scanner config names must be inside a volume mounted in the
/// pods that load it.
fn synapse_paths_mounted(objects: &[Value], out: &mut Vec<Finding>) {
    let configmaps: BTreeMap<&str, &Value> = objects
        .iter()
        .filter(|o| kind(o) == "ConfigMap")
        .map(|o| (name(o), o))
        .collect();
    for o in objects {
        let Some(tpl) = pod_template(o) else { continue };
        let app = tpl
            .pointer("/metadata/labels/app.kubernetes.io~1name")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !PATH_READING_APPS.contains(&app) {
            continue;
        }
        let Some(spec) = tpl.get("spec") else {
            continue;
        };
        let volumes: BTreeMap<&str, &Value> = spec
            .get("volumes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|v| (v.get("name").and_then(Value::as_str).unwrap_or(""), v))
            .collect();
        for c in containers(spec) {
            let mounts: Vec<(&str, &str)> = c
                .get("volumeMounts")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|m| {
                    (
                        m.get("mountPath").and_then(Value::as_str).unwrap_or(""),
                        m.get("name").and_then(Value::as_str).unwrap_or(""),
                    )
                })
                .collect();
            // Config files this container loads, read from the ConfigMaps mounted into it.
            let mut configs: Vec<Value> = Vec::new();
            for (_, vol) in &mounts {
                if let Some(cm) = volumes
                    .get(vol)
                    .and_then(|v| v.pointer("/configMap/name"))
                    .and_then(Value::as_str)
                {
                    if let Some(cm) = configmaps.get(cm) {
                        for (k, text) in cm
                            .get("data")
                            .and_then(Value::as_object)
                            .into_iter()
                            .flatten()
                        {
                            if k.ends_with(".yaml") && k != "log.yaml" {
                                if let Ok(v) =
                                    serde_saphyr::from_str::<Value>(text.as_str().unwrap_or(""))
                                {
                                    configs.push(v);
                                }
                            }
                        }
                    }
                }
            }
            for cfg in &configs {
                for path in referenced_paths(cfg) {
                    if !mounts.iter().any(|(m, _)| {
                        path == *m || path.starts_with(&format!("{}/", m.trim_end_matches('/')))
                    }) {
                        out.push(
                            Finding::new(
                                "MX-OUT-011",
                                format!(
                                    "{} loads a config naming `{path}`, which no volume provides",
                                    id(o)
                                ),
                            )
                            .on(id(o)),
                        );
                    }
                }
            }
        }
    }
}

/// Secret names a pod spec references (volumes, env, envFrom).
fn secret_refs(spec: &Value) -> Vec<&str> {
    let mut out = Vec::new();
    for v in spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(n) = v.pointer("/secret/secretName").and_then(Value::as_str) {
            out.push(n);
        }
    }
    for c in containers(spec) {
        for e in c.get("env").and_then(Value::as_array).into_iter().flatten() {
            if let Some(n) = e
                .pointer("/valueFrom/secretKeyRef/name")
                .and_then(Value::as_str)
            {
                out.push(n);
            }
        }
        for e in c
            .get("envFrom")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(n) = e.pointer("/secretRef/name").and_then(Value::as_str) {
                out.push(n);
            }
        }
    }
    out
}

/// LI workloads (by the parties' names, which are their pods' `app.kubernetes.io/name`) run only
/// on the LI nodes and hold no credential of main: no CloudNativePG superuser Secret, and no
/// Secret holding the synapse database password or main's S3 secret key (seed 004 issues 3.3 and
/// 1.7: the sync system held main's superuser and read-write credentials).
fn li_isolation(objects: &[Value], secrets: Option<&Secrets>, out: &mut Vec<Finding>) {
    use mxstack_spec::SecretName;
    let li_apps: Vec<&str> = mxstack_topology::flows::Party::ON_LI_NODES
        .iter()
        .map(|p| p.as_str())
        .collect();
    let superusers: BTreeSet<String> = objects
        .iter()
        .filter(|o| kind(o) == "Cluster")
        .map(|o| format!("{}-superuser", name(o)))
        .collect();
    // Secrets that hold one of main's credentials.
    let mains: BTreeSet<&str> = match secrets {
        Some(s) => {
            let values = [
                s.get(SecretName::SynapseDbPassword),
                s.get(SecretName::S3SecretKey),
            ];
            objects
                .iter()
                .filter(|o| kind(o) == "Secret")
                .filter(|o| {
                    let mut leaves = Vec::new();
                    if let Some(d) = o.get("stringData") {
                        strings(d, &mut leaves);
                    }
                    leaves
                        .iter()
                        .any(|l| values.iter().any(|v| v.len() >= 8 && l.contains(v)))
                })
                .map(name)
                .collect()
        }
        None => BTreeSet::new(),
    };
    for o in objects {
        let Some(tpl) = pod_template(o) else { continue };
        let app = tpl
            .pointer("/metadata/labels/app.kubernetes.io~1name")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !li_apps.contains(&app) {
            continue;
        }
        let Some(spec) = tpl.get("spec") else {
            continue;
        };
        // A token would let the pod talk to the API server of main's namespace; a pod that needs
        // one (the working-copy job's kubectl) mounts its own as a projected volume, visibly.
        if spec
            .get("automountServiceAccountToken")
            .and_then(Value::as_bool)
            != Some(false)
        {
            out.push(
                Finding::new(
                    "MX-OUT-012",
                    format!(
                        "{} ({app}) mounts a service account token automatically",
                        id(o)
                    ),
                )
                .on(id(o)),
            );
        }
        let pinned = spec
            .get("nodeSelector")
            .and_then(Value::as_object)
            .is_some_and(|m| !m.is_empty());
        if !pinned {
            out.push(
                Finding::new(
                    "MX-OUT-012",
                    format!("{} ({app}) has no nodeSelector for the LI nodes", id(o)),
                )
                .on(id(o)),
            );
        }
        for s in secret_refs(spec) {
            if superusers.contains(s) || mains.contains(s) {
                out.push(
                    Finding::new(
                        "MX-OUT-012",
                        format!(
                            "{} ({app}) references Secret `{s}`, a credential of main",
                            id(o)
                        ),
                    )
                    .on(id(o)),
                );
            }
        }
    }
}

fn referenced_paths(cfg: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(m) = cfg.as_object() {
        for (k, v) in m {
            if (k.ends_with("_path") || k == "log_config" || k == "worker_log_config")
                && v.is_string()
            {
                out.push(v.as_str().unwrap_or("").to_string());
            }
        }
    }
    for p in ["/redis/password_path"] {
        if let Some(s) = cfg.pointer(p).and_then(Value::as_str) {
            out.push(s.to_string());
        }
    }
    out.retain(|p| p.starts_with('/'));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The E2EE recovery chain's objects as a render makes them, from `s`.
    fn escrow_objects(s: &Secrets, vault_url: &str, console_url: &str, module: bool) -> Vec<Value> {
        use mxstack_spec::SecretName;
        let cm = |n: &str, key: &str, v: Value| {
            json!({"kind": "ConfigMap", "metadata": {"name": n},
                   "data": {key: serde_saphyr::to_string(&v).unwrap()}})
        };
        let modules = if module {
            json!([{"module": ESCROW_MODULE, "config": {"vault_url": vault_url}}])
        } else {
            json!([])
        };
        vec![
            cm(
                "key-vault-config",
                "key-vault.yaml",
                json!({
                    "recipients": {"vault": s.key_vault_recipient().unwrap()},
                    "warrant_signer": s.li_console_public_key().unwrap(),
                }),
            ),
            cm(
                "synapse-config",
                "homeserver.yaml",
                json!({"modules": modules}),
            ),
            cm(
                "li-console-config",
                "li-console.yaml",
                json!({"key_vault": {"url": console_url}}),
            ),
            json!({"kind": "Service", "metadata": {"name": "key-vault"}, "spec": {"ports": [{"port": 8092}]}}),
            json!({"kind": "Secret", "metadata": {"name": "li-console-vault-identity"},
                   "stringData": {"identity": s.get(SecretName::KeyVaultAgeIdentity)}}),
            json!({"kind": "Secret", "metadata": {"name": "li-console-signing-key"},
                   "stringData": {"signing_key": s.get(SecretName::LiConsoleSigningKey)}}),
        ]
    }

    fn chain_findings(objects: &[Value]) -> Vec<String> {
        let mut out = Vec::new();
        escrow_chain(objects, &mut out);
        assert!(out.iter().all(|f| f.rule == "MX-OUT-013"));
        out.into_iter().map(|f| f.message).collect()
    }

    #[test]
    fn the_escrow_chain_holds_only_when_every_piece_comes_from_the_same_secrets() {
        let s = Secrets::generate_all().unwrap();
        let url = "http://key-vault.matrix.svc.cluster.local:8092";
        assert_eq!(
            chain_findings(&escrow_objects(&s, url, url, true)),
            Vec::<String>::new()
        );
        // No key vault at all (li off): nothing to check.
        assert!(chain_findings(&[]).is_empty());
        // No escrow module in main.
        let f = chain_findings(&escrow_objects(&s, url, url, false));
        assert!(f[0].contains("does not load"), "{f:?}");
        // A URL no Service serves; the console reading elsewhere.
        let f = chain_findings(&escrow_objects(
            &s,
            "http://vault.matrix.svc:8092",
            url,
            true,
        ));
        assert!(f.iter().any(|m| m.contains("no Service serves")), "{f:?}");
        assert!(f.iter().any(|m| m.contains("retrieves from")), "{f:?}");
        // Secrets of another secrets.yaml: identity and signing key no longer match the vault.
        let other = Secrets::generate_all().unwrap();
        let mut objects = escrow_objects(&s, url, url, true);
        let theirs = escrow_objects(&other, url, url, true);
        objects[4] = theirs[4].clone();
        objects[5] = theirs[5].clone();
        let f = chain_findings(&objects);
        assert!(
            f.iter().any(|m| m.contains("li-console-vault-identity")),
            "{f:?}"
        );
        assert!(f.iter().any(|m| m.contains("warrant_signer")), "{f:?}");
        // No secret value in any message.
        for m in &f {
            for (_, v) in s.values().chain(other.values()) {
                assert!(!m.contains(v));
            }
        }
    }

    fn deploy(labels: Value, volumes: Value, env: Value) -> Value {
        json!({"kind": "Deployment", "metadata": {"name": "d"}, "spec": {"template": {"metadata": {"labels": labels},
              "spec": {"volumes": volumes, "containers": [{"name": "c", "env": env}]}}}})
    }

    #[test]
    fn finds_leak_missing_ref_and_orphan_service() {
        let secrets = Secrets::generate_all().unwrap();
        let redis = secrets
            .get(mxstack_spec::SecretName::RedisPassword)
            .to_string();
        let objs = vec![
            json!({"kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"redis.conf": format!("requirepass {redis}")}}),
            deploy(
                json!({"app": "x"}),
                json!([{"name": "s", "secret": {"secretName": "nope"}}]),
                json!([{"name": "P", "valueFrom": {"secretKeyRef": {"name": "cfg", "key": "k"}}}]),
            ),
            json!({"kind": "Service", "metadata": {"name": "svc"}, "spec": {"selector": {"app": "y"}}}),
            json!({"kind": "HorizontalPodAutoscaler", "metadata": {"name": "h"}, "spec": {"scaleTargetRef": {"name": "synapse-event-persister"}}}),
        ];
        let f = check(&objs, Some(&secrets));
        let ids: BTreeSet<_> = f.iter().map(|f| f.rule).collect();
        for want in [
            "MX-OUT-001",
            "MX-OUT-003",
            "MX-OUT-004",
            "MX-OUT-007",
            "MX-OUT-010",
        ] {
            assert!(ids.contains(want), "{want} missing: {ids:?}");
        }
        assert!(
            f.iter().all(|x| !x.to_string().contains(&redis)),
            "a finding printed a secret"
        );
    }

    #[test]
    fn li_workloads_stay_on_li_nodes_without_mains_credentials() {
        let secrets = Secrets::generate_all().unwrap();
        let db = secrets
            .get(mxstack_spec::SecretName::SynapseDbPassword)
            .to_string();
        let pod = |node_selector: Value, env: Value| {
            json!({"kind": "Deployment", "metadata": {"name": "synapse-li"}, "spec": {"template": {
                "metadata": {"labels": {"app.kubernetes.io/name": "synapse-li"}},
                "spec": {"nodeSelector": node_selector, "automountServiceAccountToken": false,
                         "containers": [{"name": "c", "env": env}]}}}})
        };
        let base = vec![
            json!({"kind": "Cluster", "metadata": {"name": "main-pg"}, "spec": {"enableSuperuserAccess": true}}),
            json!({"kind": "Secret", "metadata": {"name": "synapse-db-credentials"}, "stringData": {"password": db}}),
            json!({"kind": "Secret", "metadata": {"name": "li-db"}, "stringData": {"password": "an-li-only-password"}}),
        ];
        let env = |secret: &str| json!([{"name": "PGPASSWORD", "valueFrom": {"secretKeyRef": {"name": secret, "key": "password"}}}]);
        let li_nodes = json!({"mxstack.io/role": "li"});
        let count = |objs: Vec<Value>| {
            check(&objs, Some(&secrets))
                .iter()
                .filter(|f| f.rule == "MX-OUT-012")
                .count()
        };
        let with = |p: Value| {
            let mut v = base.clone();
            v.push(p);
            v
        };
        assert_eq!(count(with(pod(li_nodes.clone(), env("li-db")))), 0);
        assert_eq!(
            count(with(pod(json!({}), env("li-db")))),
            1,
            "not on LI nodes"
        );
        assert_eq!(
            count(with(pod(li_nodes.clone(), env("synapse-db-credentials")))),
            1,
            "holds the synapse database password"
        );
        assert_eq!(
            count(with(pod(li_nodes.clone(), env("main-pg-superuser")))),
            1,
            "holds main's superuser"
        );
        let mut token = pod(li_nodes, env("li-db"));
        token["spec"]["template"]["spec"]
            .as_object_mut()
            .unwrap()
            .remove("automountServiceAccountToken");
        assert_eq!(count(with(token)), 1, "mounts the default token");
    }

    #[test]
    fn cnpg_superuser_secret_and_role_secrets_are_references() {
        let job = |secret: &str| {
            json!({"kind": "Job", "metadata": {"name": "j"}, "spec": {"template": {"metadata": {"labels": {"a": "b"}},
                "spec": {"containers": [{"name": "c", "env": [{"name": "U", "valueFrom": {"secretKeyRef": {"name": secret, "key": "username"}}}]}]}}}})
        };
        let cluster = |superuser: bool| {
            json!({"kind": "Cluster", "metadata": {"name": "main-pg"}, "spec": {"enableSuperuserAccess": superuser,
                "managed": {"roles": [{"name": "r", "passwordSecret": {"name": "role-secret"}}]},
                "bootstrap": {"initdb": {"postInitApplicationSQLRefs": {"configMapRefs": [{"name": "sql", "key": "setup.sql"}]}}}}})
        };
        let missing = |objs: Vec<Value>| -> Vec<String> {
            check(&objs, None)
                .into_iter()
                .filter(|f| f.rule == "MX-OUT-004")
                .map(|f| f.message)
                .collect()
        };
        let role = json!({"kind": "Secret", "metadata": {"name": "role-secret"}, "stringData": {"username": "r", "password": "p"}});
        let sql = json!({"kind": "ConfigMap", "metadata": {"name": "sql"}, "data": {"setup.sql": "SELECT 1;"}});
        assert_eq!(
            missing(vec![
                cluster(true),
                job("main-pg-superuser"),
                role.clone(),
                sql.clone()
            ]),
            Vec::<String>::new()
        );
        let m = missing(vec![
            cluster(false),
            job("main-pg-superuser"),
            role.clone(),
            sql,
        ]);
        assert!(m.iter().any(|x| x.contains("main-pg-superuser")), "{m:?}");
        let m = missing(vec![cluster(true), role]);
        assert!(m.iter().any(|x| x.contains("`sql`")), "{m:?}");
        let m = missing(vec![cluster(true)]);
        assert!(m.iter().any(|x| x.contains("role-secret")), "{m:?}");
    }

    #[test]
    fn content_scanner_secret_path_must_be_mounted() {
        let scanner = |mounts: Value| {
            json!({"kind": "Deployment", "metadata": {"name": "content-scanner"}, "spec": {"template": {
                "metadata": {"labels": {"app.kubernetes.io/name": "content-scanner"}},
                "spec": {
                    "volumes": [{"name": "config", "configMap": {"name": "content-scanner-config"}},
                                {"name": "secrets", "secret": {"secretName": "content-scanner-secrets"}}],
                    "containers": [{"name": "c", "volumeMounts": mounts}]}}}})
        };
        let config = json!({"kind": "ConfigMap", "metadata": {"name": "content-scanner-config"},
            "data": {"scanner.yaml": "listen: 0.0.0.0:8090\nrequest_secret_path: /mxstack/secrets/content-scanner/request_secret\n"}});
        let config_mount = json!({"name": "config", "mountPath": "/mxstack/content-scanner"});
        let missing = vec![config.clone(), scanner(json!([config_mount.clone()]))];
        assert!(check(&missing, None)
            .iter()
            .any(|f| f.rule == "MX-OUT-011" && f.to_string().contains("request_secret")));
        let mounted = vec![
            config,
            scanner(
                json!([config_mount, {"name": "secrets", "mountPath": "/mxstack/secrets/content-scanner"}]),
            ),
        ];
        assert!(check(&mounted, None).iter().all(|f| f.rule != "MX-OUT-011"));
    }
}

#[cfg(test)]
mod port_tests {
    use super::*;
    use serde_json::json;

    fn workload(name: &str, labels: Value, ports: Value) -> Value {
        json!({"kind": "Deployment", "metadata": {"name": name}, "spec": {"template": {
            "metadata": {"labels": labels},
            "spec": {"containers": [{"name": "c", "ports": ports}]}}}})
    }

    /// Two pods behind `app: web`; only the first names a `metrics` port.
    fn web() -> Vec<Value> {
        let http = json!({"name": "http", "containerPort": 8080, "protocol": "TCP"});
        vec![
            workload(
                "web",
                json!({"app": "web"}),
                json!([http, {"name": "metrics", "containerPort": 9090}]),
            ),
            workload(
                "web-canary",
                json!({"app": "web", "track": "canary"}),
                json!([http]),
            ),
            workload("client", json!({"app": "client"}), json!([])),
        ]
    }

    fn policy(own: Value, types: Value, ingress: Value, egress: Value) -> Value {
        json!({"kind": "NetworkPolicy", "metadata": {"name": "p", "namespace": "matrix"},
               "spec": {"podSelector": own, "policyTypes": types, "ingress": ingress, "egress": egress}})
    }

    fn ingress_to_web(ports: Value) -> Value {
        policy(
            json!({"matchLabels": {"app": "web"}}),
            json!(["Ingress", "Egress"]),
            json!([{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}], "ports": ports}]),
            json!([]),
        )
    }

    fn egress_from_client(to: Value, ports: Value) -> Value {
        policy(
            json!({"matchLabels": {"app": "client"}}),
            json!(["Egress"]),
            json!([]),
            json!([{"to": to, "ports": ports}]),
        )
    }

    /// Messages of the port rules' findings on `web()` plus `extra`.
    fn port_findings(extra: Value) -> Vec<String> {
        let mut objects = web();
        objects.push(extra);
        check(&objects, None)
            .into_iter()
            .filter(|f| matches!(f.rule, "MX-OUT-014" | "MX-OUT-015"))
            .map(|f| f.to_string())
            .collect()
    }

    #[test]
    fn policy_ports_must_be_declared_by_the_pods_they_allow() {
        let to_web = json!([{"podSelector": {"matchLabels": {"app": "web"}}}]);
        // Declared ports, by number and by a name every selected pod has: clean.
        assert_eq!(
            port_findings(ingress_to_web(json!([{"port": 8080}, {"port": "http"}]))),
            Vec::<String>::new()
        );
        assert!(
            port_findings(egress_from_client(to_web.clone(), json!([{"port": 8080}]))).is_empty()
        );
        // A port no container declares, on either side (once, however many rules repeat it).
        let mut twice = ingress_to_web(json!([{"port": 8081}]));
        let rule = twice["spec"]["ingress"][0].clone();
        twice["spec"]["ingress"].as_array_mut().unwrap().push(rule);
        let f = port_findings(twice);
        assert!(
            f.len() == 1 && f[0].contains("ingress to port 8081/TCP"),
            "{f:?}"
        );
        assert!(
            f[0].contains("NetworkPolicy/p") && f[0].contains("MX-OUT-014"),
            "{f:?}"
        );
        let f = port_findings(egress_from_client(to_web.clone(), json!([{"port": 9999}])));
        assert!(
            f.len() == 1 && f[0].contains("egress to port 9999/TCP"),
            "{f:?}"
        );
        // The right number on the wrong protocol.
        let f = port_findings(ingress_to_web(json!([{"port": 8080, "protocol": "UDP"}])));
        assert!(f.len() == 1 && f[0].contains("8080/UDP"), "{f:?}");
        // A range with holes.
        let f = port_findings(ingress_to_web(json!([{"port": 8079, "endPort": 8081}])));
        assert!(
            f.len() == 1 && f[0].contains("2 of them, first 8079"),
            "{f:?}"
        );
        // A named port the canary lacks: found on the canary only, with the fix for it.
        let f = port_findings(ingress_to_web(json!([{"port": "metrics"}])));
        assert!(
            f.len() == 1 && f[0].contains("Deployment/web-canary"),
            "{f:?}"
        );
        assert!(
            f[0].contains("name a containerPort `metrics` (TCP) in Deployment/web-canary"),
            "{f:?}"
        );
        // matchExpressions select too: only the canary, which has no metrics port.
        let canary = json!([{"podSelector": {"matchExpressions": [{"key": "track", "operator": "In", "values": ["canary"]}]}}]);
        let f = port_findings(egress_from_client(canary, json!([{"port": 9090}])));
        assert!(
            f.len() == 1 && f[0].contains("(Deployment/web-canary)"),
            "{f:?}"
        );
    }

    #[test]
    fn policy_ports_outside_the_render_are_skipped() {
        let skipped = [
            // The Kubernetes API and the internet: addresses, not pods.
            json!([{"ipBlock": {"cidr": "0.0.0.0/0"}}]),
            // DNS, operators, the edge: pods of other namespaces.
            json!([{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}]),
            json!([{"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "web"}}}]),
            // CloudNativePG's instances: made by the operator, not rendered.
            json!([{"podSelector": {"matchLabels": {"cnpg.io/cluster": "main-pg"}}}]),
        ];
        for to in skipped {
            let f = port_findings(egress_from_client(to.clone(), json!([{"port": 12345}])));
            assert!(f.is_empty(), "{to}: {f:?}");
        }
        // Egress anywhere (no peers), a policy on operator pods, ingress rules of an egress-only policy.
        let anywhere = policy(
            json!({"matchLabels": {"app": "client"}}),
            json!(["Egress"]),
            json!([]),
            json!([{"ports": [{"port": 1}]}]),
        );
        let on_postgres = policy(
            json!({"matchLabels": {"cnpg.io/cluster": "main-pg"}}),
            json!(["Ingress"]),
            json!([{"ports": [{"port": 5432}]}]),
            json!([]),
        );
        let egress_only = policy(
            json!({"matchLabels": {"app": "web"}}),
            json!(["Egress"]),
            json!([{"ports": [{"port": 1}]}]),
            json!([]),
        );
        for p in [anywhere, on_postgres, egress_only] {
            assert!(port_findings(p.clone()).is_empty(), "{p}");
        }
        // A namespaceSelector naming exactly our namespace is our pods: checked.
        let ours = json!([{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "matrix"}},
                           "podSelector": {"matchLabels": {"app": "web"}}}]);
        assert_eq!(
            port_findings(egress_from_client(ours, json!([{"port": 12345}]))).len(),
            1
        );
        // Pods that no rendered workload has (and no operator makes): the flow goes nowhere.
        let typo = json!([{"podSelector": {"matchLabels": {"app": "wbe"}}}]);
        let f = port_findings(egress_from_client(typo, json!([{"port": 8080}])));
        assert!(
            f.len() == 1 && f[0].contains("no rendered pod has those labels"),
            "{f:?}"
        );
    }

    fn service(selector: Value, ports: Value) -> Value {
        json!({"kind": "Service", "metadata": {"name": "web"}, "spec": {"selector": selector, "ports": ports}})
    }

    #[test]
    fn service_target_ports_must_be_declared_by_every_selected_pod() {
        let web = json!({"app": "web"});
        // By name, and by number through the default (targetPort = port): clean.
        let clean = service(
            web.clone(),
            json!([{"port": 80, "targetPort": "http"}, {"port": 8080}]),
        );
        assert_eq!(port_findings(clean), Vec::<String>::new());
        // A named target the canary lacks.
        let f = port_findings(service(
            web.clone(),
            json!([{"port": 9090, "targetPort": "metrics"}]),
        ));
        assert!(
            f.len() == 1 && f[0].contains("Service/web targets port `metrics` (TCP)"),
            "{f:?}"
        );
        assert!(
            f[0].contains("MX-OUT-015") && f[0].contains("Deployment/web-canary"),
            "{f:?}"
        );
        // A number neither declares (default target), and a name on the wrong protocol.
        let f = port_findings(service(web.clone(), json!([{"port": 81}])));
        assert_eq!(f.len(), 2, "{f:?}");
        let f = port_findings(service(
            web,
            json!([{"port": 80, "targetPort": "http", "protocol": "UDP"}]),
        ));
        assert_eq!(f.len(), 2, "{f:?}");
        // Selecting no rendered pod is MX-OUT-003's finding; operator pods are not in the render.
        for sel in [
            json!({"app": "nothing"}),
            json!({"cnpg.io/cluster": "main-pg"}),
        ] {
            assert!(port_findings(service(sel, json!([{"port": 5432}]))).is_empty());
        }
    }
}
