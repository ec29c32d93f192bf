//! PostgreSQL: a CloudNativePG Cluster with synchronous replication, backed up through the Barman
//! Cloud plugin (never the deprecated in-tree `spec.backup.barmanObjectStore`).

use mxstack_topology::addressing::{Addressing, POSTGRES_CLUSTER};
use mxstack_topology::synapse::{DATABASE_NAME, DATABASE_USER};
use serde_json::{json, Map, Value};

use crate::meta::meta_json;
use crate::secrets::{DB_CREDENTIALS, S3_ACCESS_KEY_ID, S3_CREDENTIALS, S3_SECRET_KEY};
use crate::{Ctx, Out, Phase};

const FILE: &str = "postgres.yaml";
pub const BARMAN_PLUGIN: &str = "barman-cloud.cloudnative-pg.io";
pub const OBJECT_STORE: &str = "main-pg-backups";
/// Label CloudNativePG puts on every instance pod of a cluster.
pub const CLUSTER_LABEL: &str = "cnpg.io/cluster";

pub fn render(ctx: &Ctx, out: &mut Out) {
    out.add(Phase::Infrastructure, FILE, cluster(ctx));
    out.add(Phase::Infrastructure, FILE, object_store(ctx));
    out.add(Phase::Infrastructure, FILE, scheduled_backup(ctx));
}

fn storage(ctx: &Ctx, size: &str) -> Value {
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
    json!({
        "apiVersion": "postgresql.cnpg.io/v1",
        "kind": "Cluster",
        "metadata": meta_json(ctx, POSTGRES_CLUSTER, "postgres"),
        "spec": {
            "instances": pg.instances,
            "imageName": ctx.cfg.images.postgres,
            "primaryUpdateStrategy": "unsupervised",
            // No component needs the postgres superuser (seed 004 issue 1.7: superuser access only
            // where something needs it). Turn it on here when one does, e.g. for LI replication setup.
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
            "storage": storage(ctx, &pg.storage),
            "walStorage": storage(ctx, &pg.wal_storage),
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
    })
}

fn object_store(ctx: &Ctx) -> Value {
    let b = &ctx.cfg.backup;
    json!({
        "apiVersion": "barmancloud.cnpg.io/v1",
        "kind": "ObjectStore",
        "metadata": meta_json(ctx, OBJECT_STORE, "postgres"),
        "spec": {
            "configuration": {
                "destinationPath": format!("s3://{}/{POSTGRES_CLUSTER}", b.bucket),
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
        "metadata": meta_json(ctx, &format!("{POSTGRES_CLUSTER}-base"), "postgres"),
        "spec": {
            "schedule": ctx.cfg.backup.schedule,
            "immediate": true,
            "backupOwnerReference": "self",
            "cluster": { "name": POSTGRES_CLUSTER },
            "method": "plugin",
            "pluginConfiguration": { "name": BARMAN_PLUGIN },
        }
    })
}
