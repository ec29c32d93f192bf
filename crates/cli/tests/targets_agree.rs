//! Issue 17: the local stack runs what Kubernetes runs. For the same config, the settings each
//! target gives a component are compared, everything but addresses, paths and the memory a
//! single machine caps: Valkey's and Sentinel's settings, every key of Synapse's homeserver.yaml,
//! our services' configs and coturn's options. A setting written for one target only is a drift
//! this test names.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use mxstack_local::plan::Programs;
use mxstack_local::{LocalPlan, StateLayout};
use mxstack_spec::{Config, Feature, Secrets, Tier};
use serde_json::Value;

fn config() -> Config {
    // The 100-user tier: one process per worker group, what `up --replicas 1` runs too.
    Config::new(
        "acme.test",
        Tier::T100,
        [
            Feature::Li,
            Feature::Antivirus,
            Feature::Calls,
            Feature::Monitoring,
        ]
        .into(),
    )
}

struct Both {
    k8s: Vec<Value>,
    local: LocalPlan,
}

fn both() -> Both {
    let c = config();
    let secrets = Secrets::generate_all().unwrap();
    // The same model on both sides: the local stack's topology (what `up --replicas 1` runs,
    // its pools sized for `mxstack scale`) rendered for Kubernetes too, so only the target
    // differs.
    let layout = StateLayout::for_config(Path::new("/srv/site/mxstack.yaml"), None);
    let shape = mxstack_local::Shape::new(20000, 1);
    let (same, _) = mxstack_local::plan::local_topology(&c, &layout, &shape);
    let k8s = mxstack_k8s::render(&same, &secrets)
        .objects
        .into_iter()
        .map(|o| o.value)
        .collect();
    let local = LocalPlan::build(&c, &secrets, &layout, &shape, &Programs::at_debian_paths());
    Both { k8s, local }
}

fn config_map<'a>(objects: &'a [Value], name: &str, key: &str) -> &'a str {
    objects
        .iter()
        .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("ConfigMap {name}"))["data"][key]
        .as_str()
        .unwrap_or_else(|| panic!("{name}: {key}"))
}

fn local_file<'a>(plan: &'a LocalPlan, ends_with: &str) -> &'a str {
    &plan
        .files
        .iter()
        .find(|f| f.path.ends_with(ends_with))
        .unwrap_or_else(|| panic!("local file {ends_with}"))
        .content
}

/// `key value` lines of a Valkey/Sentinel config (heredoc of a start script, or a file), keyed
/// by the directive (with Sentinel's master name), leaving out what differs by design.
fn directives(text: &str) -> BTreeMap<String, String> {
    // Addresses, paths, secrets and the process model (daemonize, the pod's announce names),
    // and maxmemory, which the local stack caps for one machine.
    const BY_TARGET: [&str; 18] = [
        "port",
        "bind",
        "dir",
        "requirepass",
        "masterauth",
        "replica-announce-ip",
        "replicaof",
        "protected-mode",
        "daemonize",
        "maxmemory",
        "sentinel monitor",
        "sentinel auth-pass",
        "sentinel sentinel-pass",
        "sentinel resolve-hostnames",
        "sentinel announce-hostnames",
        "sentinel announce-ip",
        "sentinel announce-port",
        "cat",
    ];
    let mut out = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with("CONF") {
            continue;
        }
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or_default();
        let key = if first == "sentinel" {
            format!("sentinel {}", words.next().unwrap_or_default())
        } else {
            first.to_string()
        };
        if BY_TARGET.contains(&key.as_str()) {
            continue;
        }
        out.insert(key, words.collect::<Vec<_>>().join(" "));
    }
    out
}

/// The heredoc (`cat > ... <<CONF` ... `CONF`) of a start script.
fn heredoc(script: &str) -> &str {
    let start = script.find("<<CONF\n").expect("heredoc") + "<<CONF\n".len();
    let end = script[start..].find("\nCONF").expect("heredoc end") + start;
    &script[start..end]
}

#[test]
fn valkey_and_sentinel_run_the_same_settings_on_both_targets() {
    let b = both();
    for (script, file) in [
        ("start-valkey.sh", "valkey.conf"),
        ("start-sentinel.sh", "sentinel.conf"),
    ] {
        let k = directives(heredoc(config_map(&b.k8s, "valkey-scripts", script)));
        let l = directives(local_file(&b.local, file));
        assert!(!k.is_empty());
        assert_eq!(k, l, "{script} (Kubernetes) against {file} (local)");
    }
    let k = directives(heredoc(config_map(
        &b.k8s,
        "valkey-scripts",
        "start-valkey.sh",
    )));
    assert_eq!(k["maxmemory-policy"], "allkeys-lru");
}

/// Leaves of a YAML document as `path -> value`.
fn leaves(v: &Value, path: String, out: &mut BTreeMap<String, Value>) {
    match v {
        Value::Object(m) => m
            .iter()
            .for_each(|(k, v)| leaves(v, format!("{path}.{k}"), out)),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, v)| leaves(v, format!("{path}[{i}]"), out)),
        _ => {
            out.insert(path, v.clone());
        }
    }
}

/// Keys whose values are addresses or paths (they differ by design).
fn by_target(path: &str) -> bool {
    const ADDRESS_OR_PATH: [&str; 18] = [
        ".port",
        ".host",
        "bind_addresses",
        "_path",
        "_file",
        "_dir",
        "_url",
        "public_baseurl",
        "log_config",
        "store_api_key",
        "listen",
        ".upstreams[",
        ".clamd",
        "endpoint",
        "_host",
        "_port",
        ".url",
        "turn_uris",
    ];
    // Follows the transport: the console's cookies are Secure behind the TLS edge, and cannot
    // be on the local stack's plain http://127.0.0.1.
    const BY_TRANSPORT: [&str; 1] = [".secure_cookies"];
    ADDRESS_OR_PATH.iter().any(|k| path.contains(k)) || BY_TRANSPORT.contains(&path)
}

#[test]
fn synapse_runs_the_same_homeserver_settings_on_both_targets() {
    let b = both();
    let parse = |text: &str| -> Value { serde_saphyr::from_str(text).expect("homeserver.yaml") };
    let k = parse(config_map(&b.k8s, "synapse-config", "homeserver.yaml"));
    let l = parse(local_file(&b.local, "config/homeserver.yaml"));
    let (mut kl, mut ll) = (BTreeMap::new(), BTreeMap::new());
    leaves(&k, String::new(), &mut kl);
    leaves(&l, String::new(), &mut ll);
    let keys: std::collections::BTreeSet<&String> = kl.keys().chain(ll.keys()).collect();
    let differ: Vec<String> = keys
        .into_iter()
        .filter(|p| !by_target(p))
        .filter(|p| kl.get(*p) != ll.get(*p))
        .map(|p| format!("{p}: Kubernetes {:?}, local {:?}", kl.get(p), ll.get(p)))
        .collect();
    assert!(differ.is_empty(), "settings differ:\n{}", differ.join("\n"));
    assert!(kl.len() > 50, "compared {} settings", kl.len());
}

/// The ConfigMap entry holding `key`, wherever it is.
fn config_map_entry<'a>(objects: &'a [Value], key: &str) -> &'a str {
    objects
        .iter()
        .filter(|o| o["kind"] == "ConfigMap")
        .find_map(|o| o["data"][key].as_str())
        .unwrap_or_else(|| panic!("no ConfigMap holds {key}"))
}

fn differences(k: &Value, l: &Value, by_target: impl Fn(&str) -> bool) -> Vec<String> {
    let (mut kl, mut ll) = (BTreeMap::new(), BTreeMap::new());
    leaves(k, String::new(), &mut kl);
    leaves(l, String::new(), &mut ll);
    let keys: std::collections::BTreeSet<&String> = kl.keys().chain(ll.keys()).collect();
    keys.into_iter()
        .filter(|p| !by_target(p))
        .filter(|p| kl.get(*p) != ll.get(*p) && !both_paths(kl.get(*p), ll.get(*p)))
        .map(|p| format!("{p}: Kubernetes {:?}, local {:?}", kl.get(p), ll.get(p)))
        .collect()
}

/// Two absolute paths: files live in the pod's mounts on one side, the state directory on the
/// other.
fn both_paths(a: Option<&Value>, b: Option<&Value>) -> bool {
    let path = |v: Option<&Value>| {
        v.and_then(Value::as_str)
            .is_some_and(|s| s.starts_with('/'))
    };
    path(a) && path(b)
}

#[test]
fn our_services_run_the_same_configs_on_both_targets() {
    let b = both();
    for key in [
        "scanner.yaml",
        "li-sync.yaml",
        "key-vault.yaml",
        "li-console.yaml",
        "rtc-auth.yaml",
    ] {
        let parse = |text: &str| -> Value { serde_saphyr::from_str(text).expect(key) };
        let k = parse(config_map_entry(&b.k8s, key));
        let l = parse(local_file(&b.local, key));
        let differ = differences(&k, &l, by_target);
        assert!(differ.is_empty(), "{key} differs:\n{}", differ.join("\n"));
    }
}

/// coturn's options as `name -> values` (an option may repeat), from `--name=value` arguments or
/// `name=value` lines, leaving out what differs by design: addresses, ports, TLS (no certificate
/// on one machine), the secret and the process model.
fn coturn_options<'a>(items: impl Iterator<Item = &'a str>) -> BTreeMap<String, Vec<String>> {
    const BY_TARGET: [&str; 14] = [
        "n",
        "listening-ip",
        "relay-ip",
        "listening-port",
        "tls-listening-port",
        "no-tls",
        "no-dtls",
        "cert",
        "pkey",
        "min-port",
        "max-port",
        "external-ip",
        "static-auth-secret",
        "userdb",
    ];
    const PROCESS: [&str; 2] = ["pidfile", "simple-log"];
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for item in items {
        let item = item.trim().trim_start_matches('-');
        if item.is_empty() || item.starts_with('#') {
            continue;
        }
        let (k, v) = item.split_once('=').unwrap_or((item, ""));
        if BY_TARGET.contains(&k) || PROCESS.contains(&k) {
            continue;
        }
        out.entry(k.to_string()).or_default().push(v.to_string());
    }
    out
}

#[test]
fn coturn_runs_the_same_options_on_both_targets() {
    let b = both();
    let deployment = b
        .k8s
        .iter()
        .find(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == "coturn")
        .expect("coturn Deployment");
    let args: Vec<&str> = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let k = coturn_options(args.into_iter());
    let l = coturn_options(local_file(&b.local, "turnserver.conf").lines());
    assert_eq!(
        k, l,
        "coturn: Kubernetes arguments against the local turnserver.conf"
    );
    assert_eq!(
        k["denied-peer-ip"].len(),
        mxstack_topology::coturn::DENIED_PEERS.len()
    );
    assert!(k.contains_key("use-auth-secret") && k.contains_key("no-cli"));
}
