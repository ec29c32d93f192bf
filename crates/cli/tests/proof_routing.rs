//! Proof 2: every path the rendered HAProxy map sends to a worker is one that worker can serve,
//! cross-checked with Synapse's own `python -m synapse._scripts.generate_workers_map` run on that
//! worker's rendered configuration.

mod common;

use std::collections::BTreeMap;

use common::*;
use mxstack_topology::routing;
use regex::Regex;

/// Merges the worker's config files as Synapse does (top-level keys, later files win), swaps the
/// database for an in-memory SQLite one and drops the S3 storage provider (the script sets up a
/// datastore and media storage without a running reactor, and the provider's thread pool then
/// waits forever; routes depend on neither) and prints the endpoints that worker serves.
const WORKERS_MAP: &str = r#"
import sys, yaml, runpy
merged = {}
for p in sys.argv[2:]:
    merged.update(yaml.safe_load(open(p)) or {})
merged["database"] = {"name": "sqlite3", "args": {"database": ":memory:"}}
merged.pop("media_storage_providers", None)
open(sys.argv[1], "w").write(yaml.safe_dump(merged))
# ClientRestResource's constructor adds the client media servlets (/_matrix/client/v1/media/...)
# when the process can load the media repository; the script calls the static registration
# without constructing it, so do what the constructor does.
from synapse.config.homeserver import HomeServerConfig
import synapse.rest as rest
cfg = HomeServerConfig()
cfg.parse_config_dict(merged, "", "")
if cfg.media.can_load_media_repo:
    from synapse.rest.client import media as client_media
    rest.SERVLET_GROUPS["media"] = (client_media.register_servlets,)
# The script enumerates the client, federation and key resources only. /_matrix/media/ is the
# separate `media` listener resource, which Synapse mounts when the listener names it and the
# process runs the media repository (docs/workers.md, "synapse.app.media_repository").
media = any("media" in res.get("names", []) for l in merged.get("worker_listeners", [])
            if l.get("type") == "http" for res in l.get("resources", []))
from synapse._scripts.generate_workers_map import EnumerationResource, MockHomeserver
hs = MockHomeserver(cfg, merged.get("worker_app"))
hs.setup()
if media and cfg.media.can_load_media_repo:
    print("^/_matrix/media/")
    # generic_worker.py also mounts the admin media servlets on a `media` listener: enumerate
    # them with the script's own recorder.
    from synapse.rest.admin import register_servlets_for_media_repo
    rec = EnumerationResource(is_worker=True)
    register_servlets_for_media_repo(hs, rec)
    for method, pattern in rec.registrations:
        print(method, pattern)
# The script drops PUT/DELETE of push rules on every worker (WORKERS_DENIED_METHODS), but the
# servlet serves them on the push_rules stream writer: ask the servlet itself.
from synapse.rest.client.push_rule import PushRuleRestServlet
servlet = PushRuleRestServlet(hs)
if servlet._is_push_worker:
    rec = EnumerationResource(is_worker=False)
    servlet.register(rec)
    for method, pattern in rec.registrations:
        print(method, pattern)
sys.stdout.flush()
sys.argv = ["generate_workers_map", "--config-path", sys.argv[1]]
runpy.run_module("synapse._scripts.generate_workers_map", run_name="__main__")
"#;

/// (method or "*", regex) rows of generate_workers_map output.
fn served(output: &str) -> Vec<(String, Regex)> {
    let mut rows = Vec::new();
    for line in output
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (method, pat) = match line.split_once(char::is_whitespace) {
            Some((m, p)) if !m.starts_with('^') => (m.to_string(), p.trim().to_string()),
            _ => ("*".to_string(), line.to_string()),
        };
        let re = Regex::new(&pat).unwrap_or_else(|e| panic!("pattern {pat}: {e}"));
        rows.push((method, re));
    }
    rows
}

fn map_lookup<'a>(map: &'a [(Regex, String)], path: &str) -> Option<&'a str> {
    map.iter()
        .find(|(re, _)| re.is_match(path))
        .map(|(_, b)| b.as_str())
}

fn prove(scale: &str, features: &str) -> usize {
    let (dir, out) = init_and_render("acme.test", scale, features, |_| {});
    let objs = objects(&out);
    // The rendered router maps, in file order: read-only rows are consulted first for GET/HEAD.
    let parse = |key: &str| -> Vec<(Regex, String)> {
        let text = objs
            .iter()
            .find_map(|(_, o)| o["data"][key].as_str().map(str::to_owned))
            .unwrap_or_else(|| panic!("{key} is rendered"));
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| {
                let (re, backend) = l.rsplit_once(' ').unwrap();
                (Regex::new(re).unwrap(), backend.to_string())
            })
            .collect()
    };
    let map = parse("routes.map");
    let readonly = parse("routes-readonly.map");
    let cfg_text = std::fs::read_to_string(dir.path().join("mxstack.yaml")).unwrap();
    let (config, _) = mxstack_spec::Config::from_yaml("mxstack.yaml", &cfg_text).unwrap();
    let topology = mxstack_topology::Topology::build(&config);
    let routes = routing::routes(&topology);

    // Which worker groups must serve which requests.
    let mut by_group: BTreeMap<String, Vec<(&str, &str, String)>> = BTreeMap::new();
    for r in &routes {
        for (method, path) in r.endpoint.examples {
            let read = matches!(*method, "GET" | "HEAD");
            let chosen = read
                .then(|| map_lookup(&readonly, path))
                .flatten()
                .or_else(|| map_lookup(&map, path))
                .unwrap_or("main");
            // With antivirus, the scanner rows take media downloads on purpose (and hand them
            // to the media workers, checked below).
            let shadowed = chosen == routing::CONTENT_SCANNER_BACKEND
                && r.endpoint.target
                    == routing::Target::Kind(mxstack_topology::WorkerKind::MediaRepository);
            assert!(
                chosen == r.backend || shadowed,
                "{method} {path}: the rendered map picks {chosen}, the table says {}",
                r.backend
            );
            // The scanner passes media requests on unchanged to the media workers, so those must
            // serve them; its own API (/_matrix/media_proxy/) is served by the scanner itself.
            let group = if r.group == routing::CONTENT_SCANNER_BACKEND {
                if path.starts_with("/_matrix/media_proxy/") {
                    continue;
                }
                routing::target_group(
                    &topology.groups,
                    routing::Target::Kind(mxstack_topology::WorkerKind::MediaRepository),
                )
                .map(|g| g.name.clone())
                .unwrap_or_else(|| "main".into())
            } else {
                r.group.clone()
            };
            if group != "main" {
                by_group.entry(group).or_default().push((
                    method,
                    path,
                    r.endpoint.family.to_string(),
                ));
            }
        }
    }
    assert!(
        by_group.len() >= 4,
        "routes reach too few worker groups: {:?}",
        by_group.keys()
    );

    let py = python();
    let script = dir.path().join("workers_map.py");
    std::fs::write(&script, WORKERS_MAP).unwrap();
    let modules = workspace().join("python");
    let mut checked = 0;
    for (group, requests) in &by_group {
        let sts_name = format!("synapse-{group}");
        let (_, sts) = objs
            .iter()
            .find(|(_, o)| kind(o) == "StatefulSet" && name(o) == sts_name)
            .expect("group StatefulSet");
        let root = dir.path().join(format!("root-{group}"));
        let mounts = materialise(sts, &objs, &root);
        let merged = dir.path().join(format!("merged-{group}.yaml"));
        let files = format!("/mxstack/config/homeserver.yaml /mxstack/workers/{sts_name}-0.yaml");
        let res = run_in_mounts(
            &root,
            &mounts,
            &format!(
                "'{}' '{}' '{}' {files}",
                py.display(),
                script.display(),
                merged.display()
            ),
            // The upload-scan module the Synapse image carries (images/synapse/Containerfile).
            &[("PYTHONPATH", modules.to_str().unwrap())],
        );
        let stdout = String::from_utf8_lossy(&res.stdout);
        assert!(
            res.status.success(),
            "{group}: generate_workers_map failed\n{stdout}\n{}",
            String::from_utf8_lossy(&res.stderr)
        );
        let rows = served(&stdout);
        assert!(
            rows.len() > 20,
            "{group}: implausibly few endpoints:\n{stdout}"
        );
        for (method, path, family) in requests {
            let ok = rows
                .iter()
                .any(|(m, re)| (m == "*" || m == method) && re.is_match(path));
            assert!(
                ok,
                "{scale}: {method} {path} ({family}) is routed to {group}, which does not serve it"
            );
            checked += 1;
        }
    }
    checked
}

#[test]
fn routed_paths_are_served_by_their_workers_combined_stream_writer() {
    assert!(prove("1k", "federation,li,antivirus,calls,push,monitoring") > 50);
}

#[test]
fn routed_paths_are_served_by_their_workers_dedicated_stream_writers() {
    assert!(prove("20k", "federation,push") > 50);
}
