//! PostgreSQL: a CloudNativePG Cluster with synchronous replication, backed up through the Barman
//! Cloud plugin (never the deprecated in-tree `spec.backup.barmanObjectStore`).

use mxstack_spec::Feature;
use mxstack_topology::addressing::Addressing;
use mxstack_topology::li::{main_setup_sql, REPLICATION_ROLE};
use mxstack_topology::registry as reg;
use mxstack_topology::synapse::{DATABASE_NAME, DATABASE_USER};
use serde_json::{json, Map, Value};

use crate::meta::{config_map, map, meta_json};
use crate::secrets::{
    DB_CREDENTIALS, LI_REPLICATION_CREDENTIALS, S3_ACCESS_KEY_ID, S3_CREDENTIALS, S3_SECRET_KEY,
};
use crate::{Ctx, Out, Phase};

const FILE: &str = "postgres.yaml";
pub const BARMAN_PLUGIN: &str = "barman-cloud.cloudnative-pg.io";
pub const OBJECT_STORE: &str = "main-pg-backups";
/// Label CloudNativePG puts on every instance pod of a cluster.
/// ConfigMap with the SQL that prepares main for the LI replica (`topology::li::main_setup_sql`),
/// run once by CloudNativePG when the cluster is created.
pub const LI_SETUP_CONFIG: &str = "main-pg-li-setup";
pub const LI_SETUP_KEY: &str = "li-setup.sql";

/// The Secret CloudNativePG creates for `postgres` when `enableSuperuserAccess` is on (keys
/// `username`, `password`).
pub fn superuser_secret(cluster: &str) -> String {
    format!("{cluster}-superuser")
}

pub fn render(ctx: &Ctx, out: &mut Out) {
    if ctx.has(Feature::Li) {
        // No password in it: CloudNativePG sets li_replicator's from its Secret (managed role).
        out.add(
            Phase::Infrastructure,
            FILE,
            config_map(
                ctx,
                LI_SETUP_CONFIG,
                "postgres",
                map(&[(LI_SETUP_KEY, &main_setup_sql(DATABASE_USER, None))]),
            ),
        );
    }
    out.add(Phase::Infrastructure, FILE, cluster(ctx));
    out.add(Phase::Infrastructure, FILE, object_store(ctx));
    out.add(Phase::Infrastructure, FILE, scheduled_backup(ctx));
}

/// A CloudNativePG `storage` / `walStorage` stanza.
pub fn postgres_storage(ctx: &Ctx, size: &str) -> Value {
    let mut s = Map::new();
    s.insert("size".into(), json!(size));
    if let Some(class) = &ctx.cfg.storage_class {
        s.insert("storageClass".into(), json!(class));
    }
    Value::Object(s)
}

fn cluster(ctx: &Ctx) -> Value {
    let pg = &ctx.t.sizing.postgres;
    let mut synchronous = json!({ "method": "any", "number": 1 });
    if pg.instances == 2 {
        // With one standby, "required" would stop all writes while it restarts; "preferred" keeps
        // synchronous commit whenever the standby is healthy and lets the primary continue otherwise.
        synchronous["dataDurability"] = json!("preferred");
    }
    let r = &pg.resources;
    let mut c = json!({
        "apiVersion": "postgresql.cnpg.io/v1",
        "kind": "Cluster",
        "metadata": meta_json(ctx, reg::postgres::CLUSTER, "postgres"),
        "spec": {
            "instances": pg.instances,
            "imageName": ctx.cfg.images.postgres,
            "primaryUpdateStrategy": "unsupervised",
            // No component needs the postgres superuser (seed 004 issue 1.7: superuser access only
            // where something needs it); with feature li, `li-prepare-main` does (prepare_for_li).
            "enableSuperuserAccess": false,
            "postgresql": {
                "parameters": {
                    // From the connection budget, which may raise the tier's value to fit every pool.
                    "max_connections": ctx.t.budget.max_connections.to_string(),
                    "shared_buffers": pg.shared_buffers,
                    "effective_cache_size": pg.effective_cache_size,
                    "work_mem": pg.work_mem,
                    "maintenance_work_mem": pg.maintenance_work_mem,
                },
                "synchronous": synchronous,
            },
            "bootstrap": {
                "initdb": {
                    "database": DATABASE_NAME,
                    "owner": DATABASE_USER,
                    "secret": { "name": DB_CREDENTIALS },
                    // Synapse refuses a database whose collation is not C (allow_unsafe_locale: false).
                    "encoding": "UTF8",
                    "localeCollate": "C",
                    "localeCType": "C",
                }
            },
            "storage": postgres_storage(ctx, &pg.storage),
            "walStorage": postgres_storage(ctx, &pg.wal_storage),
            "resources": {
                "requests": { "cpu": r.cpu(), "memory": r.memory() },
                "limits": { "memory": r.memory() },
            },
            "affinity": {
                "enablePodAntiAffinity": true,
                "podAntiAffinityType": "required",
                "topologyKey": "kubernetes.io/hostname",
            },
            // Metrics are scraped with a PodMonitor in 60-monitoring: monitoring.enablePodMonitor is
            // deprecated in CloudNativePG.
            "plugins": [{
                "name": BARMAN_PLUGIN,
                "isWALArchiver": true,
                "parameters": { "barmanObjectName": OBJECT_STORE },
            }],
        }
    });
    if ctx.has(Feature::Li) {
        prepare_for_li(&mut c);
    }
    c
}

/// What the LI replica needs on main:
/// - `wal_level: logical` (CloudNativePG's default today; spelled out so a change of default
///   cannot silently stop the replica);
/// - the `li_replicator` role: LOGIN REPLICATION, not a superuser, its password from the one
///   Secret li-sync also reads; member of pg_read_all_stats as `main_setup_sql` grants it (a
///   managed role's memberships are reconciled, so the list must agree);
/// - `main_setup_sql` at bootstrap (replica identities, the event trigger, grants, then the
///   publication), from a ConfigMap: the script runs as one multi-statement exec, so its
///   dollar-quoted function bodies stay whole;
/// - the superuser Secret for `li-prepare-main`, which applies the same SQL to a cluster that
///   already exists (the event trigger and SECURITY DEFINER functions need a superuser). New
///   clusters get it at bootstrap without it; the Job is idempotent and harmless there.
fn prepare_for_li(c: &mut Value) {
    let spec = &mut c["spec"];
    spec["enableSuperuserAccess"] = json!(true);
    spec["postgresql"]["parameters"]["wal_level"] = json!("logical");
    spec["managed"] = json!({
        "roles": [{
            "name": REPLICATION_ROLE,
            "ensure": "present",
            "comment": "LI replica: logical replication and SELECT, no write grant",
            "login": true,
            "replication": true,
            "superuser": false,
            "createdb": false,
            "createrole": false,
            "bypassrls": false,
            "inRoles": ["pg_read_all_stats"],
            "passwordSecret": { "name": LI_REPLICATION_CREDENTIALS },
        }]
    });
    spec["bootstrap"]["initdb"]["postInitApplicationSQLRefs"] = json!({
        "configMapRefs": [{ "name": LI_SETUP_CONFIG, "key": LI_SETUP_KEY }]
    });
}

fn object_store(ctx: &Ctx) -> Value {
    let b = &ctx.cfg.backup;
    json!({
        "apiVersion": "barmancloud.cnpg.io/v1",
        "kind": "ObjectStore",
        "metadata": meta_json(ctx, OBJECT_STORE, "postgres"),
        "spec": {
            "configuration": {
                "destinationPath": format!("s3://{}/{}", b.bucket, reg::postgres::CLUSTER),
                "endpointURL": ctx.addr.s3_endpoint(),
                "s3Credentials": {
                    "accessKeyId": { "name": S3_CREDENTIALS, "key": S3_ACCESS_KEY_ID },
                    "secretAccessKey": { "name": S3_CREDENTIALS, "key": S3_SECRET_KEY },
                },
                "wal": { "compression": "gzip", "maxParallel": 2 },
                "data": { "compression": "gzip", "jobs": 2 },
            },
            "retentionPolicy": b.retention,
        }
    })
}

fn scheduled_backup(ctx: &Ctx) -> Value {
    json!({
        "apiVersion": "postgresql.cnpg.io/v1",
        "kind": "ScheduledBackup",
        "metadata": meta_json(ctx, &format!("{}-base", reg::postgres::CLUSTER), "postgres"),
        "spec": {
            "schedule": ctx.cfg.backup.schedule,
            "immediate": true,
            "backupOwnerReference": "self",
            "cluster": { "name": reg::postgres::CLUSTER },
            "method": "plugin",
            "pluginConfiguration": { "name": BARMAN_PLUGIN },
        }
    })
}
