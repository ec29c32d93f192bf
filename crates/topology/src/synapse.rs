//! Synapse configuration: one shared homeserver.yaml and one small file per worker, built from the
//! topology so that instance_map, stream_writers and the duty settings cannot disagree with the
//! processes that exist (seed 004 issues 2.5, 2.6, 2.7).
//!
//! No secret is ever written into these files: secrets are files read through `*_path` options, and
//! the database password reaches libpq as PGPASSWORD from the one Secret CloudNativePG also uses.

use mxstack_spec::Feature;
use serde_json::{json, Map, Value};

use crate::addressing::{Addressing, SYNAPSE_SECRET_FILES};
use crate::workers::{self, SynapseProcess, WorkerKind};
use crate::Topology;

pub const DATABASE_NAME: &str = "synapse";
pub const DATABASE_USER: &str = "synapse";

/// Files Synapse loads for a process, in `--config-path` order.
pub fn config_paths(
    topology: &Topology,
    p: &SynapseProcess,
    addr: &dyn Addressing,
) -> Vec<std::path::PathBuf> {
    let paths = addr.synapse_paths();
    let _ = topology;
    let mut out = vec![paths.homeserver_yaml()];
    if !p.is_main() {
        out.push(paths.worker_yaml(&p.name));
    }
    out
}

fn first_of(topology: &Topology, kind: WorkerKind) -> Option<String> {
    topology.groups_of(kind).next().map(|g| g.process_name(0))
}

fn database(topology: &Topology, addr: &dyn Addressing, group: &str) -> Value {
    let pg = addr.postgres();
    let pool = topology.budget.for_group(group);
    json!({
        "name": "psycopg2",
        "allow_unsafe_locale": false,
        "args": {
            "user": DATABASE_USER,
            "dbname": DATABASE_NAME,
            "host": pg.host,
            "port": pg.port,
            "cp_min": pool.cp_min,
            "cp_max": pool.cp_max,
            "keepalives_idle": 10,
            "keepalives_interval": 10,
            "keepalives_count": 3,
            "application_name": group,
        }
    })
}

/// Listener resources; media workers (or main, when there are none) also serve the `media`
/// resource (/_matrix/media).
fn http_resources(topology: &Topology, kind: Option<WorkerKind>) -> Value {
    let mut names = vec!["client"];
    let serves_media = match kind {
        Some(k) => k == WorkerKind::MediaRepository,
        None => first_of(topology, WorkerKind::MediaRepository).is_none(),
    };
    if serves_media {
        names.push("media");
    }
    if topology.has(Feature::Federation) {
        names.push("federation");
    } else if kind.is_none() && topology.has(Feature::Calls) {
        // The MatrixRTC authorization service checks OpenID tokens at main's
        // /_matrix/federation/v1/openid/userinfo (part of `federation` when that is on).
        names.push("openid");
    }
    json!([{ "names": names, "compress": false }])
}

/// The shared homeserver.yaml (main reads only this; workers read it plus their own file).
pub fn homeserver_yaml(topology: &Topology, addr: &dyn Addressing) -> Value {
    let c = &topology.config;
    let hosts = c.hostnames();
    let paths = addr.synapse_paths();
    let processes = topology.processes();
    let main = &processes[0];
    let groups = &topology.groups;

    let mut instance_map = Map::new();
    for name in workers::instance_map_members(groups) {
        let p = processes
            .iter()
            .find(|p| p.instance_name() == name)
            .expect("writer process exists");
        let r = addr.replication(p);
        instance_map.insert(name, json!({ "host": r.host, "port": r.port }));
    }
    let mut stream_writers = Map::new();
    // Streams main writes are left out: Synapse's default writer is main, and it names main
    // `master` internally, so spelling it out in a worker's view would fail.
    for (s, writers) in workers::stream_writers(groups) {
        if writers.iter().any(|w| w != workers::MAIN_INSTANCE) {
            stream_writers.insert(s.key().to_string(), json!(writers));
        }
    }
    let group_processes = |kind: WorkerKind| -> Vec<String> {
        topology
            .groups_of(kind)
            .flat_map(|g| (0..g.max_replicas).map(|i| g.process_name(i)))
            .collect()
    };

    let mut hs = Map::new();
    let mut put = |k: &str, v: Value| {
        hs.insert(k.to_string(), v);
    };
    put("server_name", json!(c.domain));
    put(
        "public_baseurl",
        json!(format!("https://{}/", hosts.matrix)),
    );
    put("report_stats", json!(false));
    put("log_config", json!(paths.log_yaml()));
    put("media_store_path", json!(paths.media_store));
    put("signing_key_path", json!(paths.secret("signing.key")));
    for (file, _) in SYNAPSE_SECRET_FILES.iter().skip(1) {
        put(&format!("{file}_path"), json!(paths.secret(file)));
    }
    put("database", database(topology, addr, "main"));
    let redis = addr.redis_master();
    put(
        "redis",
        json!({ "enabled": true, "host": redis.host, "port": redis.port, "password_path": paths.redis_password_file }),
    );
    put(
        "listeners",
        json!([
            { "port": addr.http(main).port, "bind_addresses": addr.bind_addresses(), "type": "http", "tls": false,
              "x_forwarded": true, "resources": http_resources(topology, None) },
            { "port": addr.replication(main).port, "bind_addresses": addr.bind_addresses(), "type": "http",
              "tls": false, "resources": [{ "names": ["replication"] }] },
            { "port": addr.metrics(main).port, "bind_addresses": addr.bind_addresses(), "type": "metrics" },
        ]),
    );
    put("enable_metrics", json!(true));
    put("instance_map", Value::Object(instance_map));
    put("stream_writers", Value::Object(stream_writers));
    // With workers, an empty list is deliberate (federation or push off: nobody sends). A single
    // process keeps Synapse's default, main, for whatever the features enable.
    if !groups.is_empty() {
        put(
            "federation_sender_instances",
            json!(group_processes(WorkerKind::FederationSender)),
        );
        put(
            "pusher_instances",
            json!(group_processes(WorkerKind::Pusher)),
        );
    }
    if let Some(bg) = first_of(topology, WorkerKind::Background) {
        put("run_background_tasks_on", json!(bg));
        put("update_user_directory_from_worker", json!(bg));
        put("notify_appservices_from_worker", json!(bg));
    }
    // Main serves no media once media workers exist (004 issue 2.7); the first media worker runs the
    // media background jobs and writes the quarantined-media stream.
    match first_of(topology, WorkerKind::MediaRepository) {
        Some(m) => {
            put("enable_media_repo", json!(false));
            put("media_instance_running_background_jobs", json!(m));
        }
        None => put("enable_media_repo", json!(true)),
    }
    put("max_upload_size", json!(c.synapse.max_upload_size));
    put(
        "media_retention",
        json!({ "remote_media_lifetime": c.synapse.remote_media_retention }),
    );
    put(
        "media_storage_providers",
        json!([{
            "module": "s3_storage_provider.S3StorageProviderBackend",
            "store_local": true,
            "store_remote": true,
            "store_synchronous": true,
            "config": {
                "bucket": c.media.bucket,
                "region_name": c.media.region,
                "endpoint_url": addr.s3_endpoint(),
            }
        }]),
    );
    // Main censors redacted events like any Synapse; the LI replica keeps the originals.
    put(
        "redaction_retention_period",
        json!(c.synapse.redaction_retention_period),
    );
    put("url_preview_enabled", json!(c.synapse.url_previews));
    if c.synapse.url_previews {
        put(
            "url_preview_ip_range_blacklist",
            json!([
                "127.0.0.0/8",
                "10.0.0.0/8",
                "172.16.0.0/12",
                "192.168.0.0/16",
                "100.64.0.0/10",
                "192.0.0.0/24",
                "169.254.0.0/16",
                "192.88.99.0/24",
                "198.18.0.0/15",
                "192.0.2.0/24",
                "198.51.100.0/24",
                "203.0.113.0/24",
                "224.0.0.0/4",
                "::1/128",
                "fe80::/10",
                "fc00::/7",
                "2001:db8::/32",
                "ff00::/8",
                "fec0::/10"
            ]),
        );
    }
    let mut modules = Vec::new();
    if topology.has(Feature::Antivirus) {
        modules.push(crate::antivirus::synapse_module(addr));
    }
    if topology.has(Feature::Li) {
        modules.push(crate::escrow::synapse_module(addr));
    }
    if topology.has(Feature::Push) {
        modules.push(crate::push::synapse_module(c));
        if let Some(ranges) = crate::push::ip_range_whitelist(c) {
            put("ip_range_whitelist", ranges);
        }
    }
    if !modules.is_empty() {
        put("modules", json!(modules));
    }
    put("enable_registration", json!(c.synapse.enable_registration));
    put("presence", json!({ "enabled": c.synapse.presence }));
    // .well-known is served at the edge from the same model, not by Synapse.
    put("serve_server_wellknown", json!(false));
    if topology.has(Feature::Federation) {
        put(
            "trusted_key_servers",
            json!([{ "server_name": "matrix.org" }]),
        );
        put("suppress_key_server_warning", json!(true));
    } else {
        // Federation off: talk to no other server and fetch no keys (no outbound traffic).
        put("federation_domain_whitelist", json!([]));
        put("trusted_key_servers", json!([]));
        put("allow_public_rooms_over_federation", json!(false));
    }
    for (k, v) in crate::ratelimits::synapse_settings(topology.config.scale) {
        put(k, v);
    }
    if topology.has(Feature::Calls) {
        put(
            "turn_uris",
            json!(crate::coturn::uris(&addr.turn(&topology.config))),
        );
        put("turn_shared_secret_path", json!(paths.turn_secret_file));
        put("turn_user_lifetime", json!("1h"));
        put("turn_allow_guests", json!(false));
        for (k, v) in crate::rtc_auth::synapse_settings(c) {
            put(k, v);
        }
    }
    Value::Object(hs)
}

/// The per-worker file: identity, listeners, and the settings that differ per process.
pub fn worker_yaml(topology: &Topology, p: &SynapseProcess, addr: &dyn Addressing) -> Value {
    let kind = p.kind.expect("worker_yaml is for workers");
    let paths = addr.synapse_paths();
    let mut listeners = vec![];
    if kind.serves_http() {
        listeners.push(json!({ "type": "http", "port": addr.http(p).port, "bind_addresses": addr.bind_addresses(),
                               "x_forwarded": true, "resources": http_resources(topology, Some(kind)) }));
    }
    if kind.needs_replication_listener() {
        listeners.push(json!({ "type": "http", "port": addr.replication(p).port,
                               "bind_addresses": addr.bind_addresses(), "resources": [{ "names": ["replication"] }] }));
    }
    listeners.push(json!({ "type": "metrics", "port": addr.metrics(p).port, "bind_addresses": addr.bind_addresses() }));
    let mut w = Map::new();
    w.insert("worker_app".into(), json!("synapse.app.generic_worker"));
    w.insert("worker_name".into(), json!(p.name));
    w.insert("worker_listeners".into(), Value::Array(listeners));
    w.insert("worker_log_config".into(), json!(paths.log_yaml()));
    w.insert("database".into(), database(topology, addr, &p.group));
    if kind == WorkerKind::MediaRepository {
        w.insert("enable_media_repo".into(), json!(true));
    }
    Value::Object(w)
}

/// The formatter of every Synapse process's log lines: one JSON object per line (`log`,
/// `namespace`, `level`, `time`, and the context filter's `request`), which Loki parses with
/// `| json` (docs/LOGS.md). Synapse's docs/structured_logging.md.
pub const LOG_FORMATTER: &str = "synapse.logging.TerseJsonFormatter";

/// Python logging config: JSON lines to stdout, where Kubernetes and the local supervisor both
/// collect them.
pub fn log_yaml() -> Value {
    json!({
        "version": 1,
        "formatters": { "structured": { "class": LOG_FORMATTER } },
        "filters": { "context": { "()": "synapse.logging.context.LoggingContextFilter", "request": "" } },
        "handlers": { "console": { "class": "logging.StreamHandler", "formatter": "structured", "filters": ["context"],
                                   "stream": "ext://sys.stdout" } },
        "loggers": { "synapse.storage.SQL": { "level": "WARNING" }, "twisted": { "level": "WARNING" } },
        "root": { "level": "INFO", "handlers": ["console"] },
        "disable_existing_loggers": false,
    })
}

/// YAML text of a config value.
pub fn to_yaml(v: &Value) -> String {
    serde_saphyr::to_string(v).expect("json values serialize to yaml")
}

/// Synapse's shared-secret registration MAC (`/_synapse/admin/v1/register`): hex HMAC-SHA1 over
/// nonce, user, password and the admin flag, NUL-separated. `mxstack user add` and
/// `mxstack verify` both register with it.
pub fn registration_mac(
    secret: &str,
    nonce: &str,
    user: &str,
    password: &str,
    admin: bool,
) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).expect("any key");
    for part in [nonce, user, password] {
        mac.update(part.as_bytes());
        mac.update(b"\x00");
    }
    mac.update(if admin {
        b"admin".as_slice()
    } else {
        b"notadmin".as_slice()
    });
    hex::encode(mac.finalize().into_bytes())
}
