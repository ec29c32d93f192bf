//! The LI browsing stack: Synapse LI's configuration, and what every LI web UI shows.
//!
//! Synapse LI serves the working copy (`synapse_li_work` on the LI PostgreSQL), never the replica
//! li-sync keeps: browsing writes (logins, read markers, background updates), and evidence must not
//! change. The working-copy refresh replaces the copy's contents from the replica on a schedule.
//!
//! It is the same server (`server_name`, signing key) as main, so event signatures and user IDs
//! read the same, but it talks to nobody: no federation listener and an empty federation
//! whitelist, no key servers, no URL previews, no push, no presence, no registration. Nothing is
//! ever purged or censored on it (`redaction_retention_period` and
//! `forgotten_room_retention_period` are null), and its media come read-only from the LI bucket.
//! Like [`crate::synapse`], no secret is written here: the signing key is a file and the database
//! password reaches libpq as PGPASSWORD.

use serde_json::{json, Map, Value};

use crate::addressing::{Addressing, SynapsePaths};
use crate::li::WORKING_COPY_DATABASE;
pub use crate::li::WORKING_COPY_ROLE;
use crate::Topology;

/// `application_name` of Synapse LI's connections (visible in pg_stat_activity).
pub const APPLICATION_NAME: &str = "synapse-li";
/// Connection pool of the single Synapse LI process.
pub const POOL_MIN: u32 = 2;
pub const POOL_MAX: u32 = 10;
/// The signing key file in Synapse LI's secrets directory (the same key as main's).
pub const SIGNING_KEY_FILE: &str = "signing.key";

/// What every LI page says, so nobody mistakes it for the live service.
pub const BRAND: &str = "LAWFUL INTERCEPT \u{2014} read-only evidence copy";
/// Element LI's custom theme (selected by default).
pub const THEME_NAME: &str = "Lawful intercept";
/// The banner's and the theme's red.
pub const ALERT_RED: &str = "#b00020";

/// A fixed banner over every LI page, injected by the web server into the HTML it serves (so it
/// shows before any script runs, and no user setting hides it).
pub fn banner_html() -> String {
    format!(
        "<div id=\"mxstack-li-banner\" role=\"alert\" style=\"position:fixed;top:0;left:0;right:0;\
         z-index:2147483647;background:{ALERT_RED};color:#fff;font:bold 14px/28px sans-serif;\
         text-align:center;letter-spacing:.05em;pointer-events:none\">{BRAND}</div>"
    )
}

/// Element Web's custom theme for the LI instance: red chrome, pale red timeline.
pub fn element_theme() -> Value {
    json!({
        "name": THEME_NAME,
        "is_dark": false,
        "colors": {
            "accent-color": ALERT_RED,
            "primary-color": ALERT_RED,
            "warning-color": ALERT_RED,
            "sidebar-color": "#5c0011",
            "roomlist-background-color": "#fbe9e7",
            "roomlist-text-color": "#5c0011",
            "roomlist-text-secondary-color": "#7f0000",
            "roomlist-highlights-color": "#ffcdd2",
            "roomlist-separator-color": "#e57373",
            "timeline-background-color": "#fff5f5",
            "timeline-text-color": "#2b0000",
            "timeline-text-secondary-color": "#7f0000",
            "timeline-highlights-color": "#ffebee",
        }
    })
}

/// `li.node_label` (`key=value`) as a Kubernetes label: the LI nodes carry it, and are tainted
/// `key=value:NoSchedule` so nothing else lands on them. `None` when it is not a valid label.
pub fn node_label(label: &str) -> Option<(&str, &str)> {
    let (key, value) = label.split_once('=')?;
    let name_ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && s.as_bytes()[0].is_ascii_alphanumeric()
            && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
    };
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(|p| {
        p.len() <= 253
            && p.split('.').all(|l| {
                !l.is_empty()
                    && l.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            })
    });
    (prefix_ok && name_ok(name) && (value.is_empty() || name_ok(value))).then_some((key, value))
}

/// Synapse LI's homeserver.yaml. `http_port` is its one HTTP listener (client, media and admin
/// API; no `federation` resource); `paths` are where its files are mounted.
pub fn homeserver_yaml(
    topology: &Topology,
    addr: &dyn Addressing,
    http_port: u16,
    paths: &SynapsePaths,
) -> Value {
    let c = &topology.config;
    let hosts = c.hostnames();
    let li_pg = addr.li_postgres();
    let mut hs = Map::new();
    let mut put = |k: &str, v: Value| {
        hs.insert(k.to_string(), v);
    };
    put("server_name", json!(c.domain));
    put(
        "public_baseurl",
        json!(format!("https://{}/", hosts.matrix_li)),
    );
    put("report_stats", json!(false));
    put("log_config", json!(paths.log_yaml()));
    put("signing_key_path", json!(paths.secret(SIGNING_KEY_FILE)));
    put(
        "database",
        json!({
            "name": "psycopg2",
            "allow_unsafe_locale": false,
            "args": {
                "user": WORKING_COPY_ROLE,
                "dbname": WORKING_COPY_DATABASE,
                "host": li_pg.host,
                "port": li_pg.port,
                "cp_min": POOL_MIN,
                "cp_max": POOL_MAX,
                "keepalives_idle": 10,
                "keepalives_interval": 10,
                "keepalives_count": 3,
                "application_name": APPLICATION_NAME,
            }
        }),
    );
    // One listener: the client API (which includes /_synapse/admin for Synapse Admin LI) and
    // media. No `federation` resource: no other server can reach it.
    put(
        "listeners",
        json!([{
            "port": http_port,
            "bind_addresses": addr.bind_addresses(),
            "type": "http",
            "tls": false,
            "x_forwarded": true,
            "resources": [{ "names": ["client", "media"], "compress": false }],
        }]),
    );
    put("enable_registration", json!(false));
    put("enable_set_displayname", json!(false));
    put("enable_set_avatar_url", json!(false));
    put("enable_3pid_changes", json!(false));
    // Talk to nobody: no federation in or out, no key servers, no previews, no push.
    put("federation_domain_whitelist", json!([]));
    put("federation_sender_instances", json!([]));
    put("trusted_key_servers", json!([]));
    put("allow_public_rooms_over_federation", json!(false));
    put("url_preview_enabled", json!(false));
    put("push", json!({ "enabled": false }));
    put("presence", json!({ "enabled": false }));
    put("serve_server_wellknown", json!(false));
    // Keep everything: redacted events are never pruned, forgotten rooms never purged, no
    // message retention policy runs.
    put("redaction_retention_period", Value::Null);
    put("forgotten_room_retention_period", Value::Null);
    put("retention", json!({ "enabled": false }));
    // Media: the LI bucket, read-only. Nothing is ever written to S3 from here (store_* false);
    // files not on local disk are fetched from the LI bucket on demand.
    put("enable_media_repo", json!(true));
    put("media_store_path", json!(paths.media_store));
    put("max_upload_size", json!(c.synapse.max_upload_size));
    put(
        "media_storage_providers",
        json!([{
            "module": "s3_storage_provider.S3StorageProviderBackend",
            "store_local": false,
            "store_remote": false,
            "store_synchronous": false,
            "config": {
                "bucket": c.li.media_bucket(&c.media),
                "region_name": c.media.region,
                "endpoint_url": addr.s3_endpoint(),
            }
        }]),
    );
    Value::Object(hs)
}

/// Synapse LI's logging: [`crate::synapse::log_yaml`] with the request log (`synapse.access`,
/// one line per request with the user) pinned at INFO, whatever the root level becomes.
pub fn log_yaml() -> Value {
    let mut log = crate::synapse::log_yaml();
    log["loggers"]["synapse.access"] = json!({ "level": "INFO" });
    log
}
