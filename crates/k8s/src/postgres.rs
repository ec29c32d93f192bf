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
    DB_CREDENTIALS, LI_BACKUP_S3_CREDENTIALS, LI_REPLICATION_CREDENTIALS, S3_ACCESS_KEY_ID,
    S3_CREDENTIALS, S3_SECRET_KEY,
};
use crate::{Ctx, Out, Phase};

const FILE: &str = "postgres.yaml";
pub const BARMAN_PLUGIN: &str = "barman-cloud.cloudnative-pg.io";
pub const OBJECT_STORE: &str = "main-pg-backups";
/// The LI cluster's ObjectStore (its own bucket and S3 identity).
pub const LI_OBJECT_STORE: &str = "li-pg-backups";
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
    let b = Backups::main(ctx);
    out.add(Phase::Infrastructure, FILE, cluster(ctx));
    out.add(Phase::Infrastructure, FILE, b.object_store(ctx));
    out.add(
        Phase::Infrastructure,
        FILE,
        b.scheduled_backup(ctx, b.cluster),
    );
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
            "plugins": Backups::main(ctx).archiver(),
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

/// A cluster's backups: the ObjectStore its Barman Cloud plugin archives to, and where that
/// writes. Main and LI each have their own (bucket and S3 identity: `topology::backup`).
pub(crate) struct Backups {
    pub cluster: &'static str,
    pub object_store: &'static str,
    pub bucket: String,
    /// The Secret with the S3 key pair the plugin writes with.
    pub credentials: &'static str,
    /// `app.kubernetes.io/name` of its objects.
    pub app: &'static str,
}

impl Backups {
    pub(crate) fn main(ctx: &Ctx) -> Backups {
        Backups {
            cluster: reg::postgres::CLUSTER,
            object_store: OBJECT_STORE,
            bucket: ctx.cfg.backup.bucket.clone(),
            credentials: S3_CREDENTIALS,
            app: "postgres",
        }
    }

    /// The LI cluster's: its own bucket, written only by the LI backup identity.
    pub(crate) fn li(ctx: &Ctx) -> Backups {
        Backups {
            cluster: reg::li_postgres::CLUSTER,
            object_store: LI_OBJECT_STORE,
            bucket: ctx.cfg.backup.li_bucket_name(),
            credentials: LI_BACKUP_S3_CREDENTIALS,
            app: crate::li::LI_POSTGRES_APP,
        }
    }

    /// The `plugins` entry that makes the Barman Cloud plugin the cluster's WAL archiver.
    pub(crate) fn archiver(&self) -> Value {
        json!([{
            "name": BARMAN_PLUGIN,
            "isWALArchiver": true,
            "parameters": { "barmanObjectName": self.object_store },
        }])
    }

    pub(crate) fn object_store(&self, ctx: &Ctx) -> Value {
        let b = &ctx.cfg.backup;
        json!({
            "apiVersion": "barmancloud.cnpg.io/v1",
            "kind": "ObjectStore",
            "metadata": meta_json(ctx, self.object_store, self.app),
            "spec": {
                "configuration": {
                    "destinationPath": format!("s3://{}/{}", self.bucket, self.cluster),
                    "endpointURL": ctx.addr.s3_endpoint(),
                    "s3Credentials": {
                        "accessKeyId": { "name": self.credentials, "key": S3_ACCESS_KEY_ID },
                        "secretAccessKey": { "name": self.credentials, "key": S3_SECRET_KEY },
                    },
                    "wal": { "compression": "gzip", "maxParallel": 2 },
                    "data": { "compression": "gzip", "jobs": 2 },
                },
                "retentionPolicy": b.retention,
            }
        })
    }

    /// The ScheduledBackup of `cluster` (this cluster, or one recovered from it).
    pub(crate) fn scheduled_backup(&self, ctx: &Ctx, cluster: &str) -> Value {
        json!({
            "apiVersion": "postgresql.cnpg.io/v1",
            "kind": "ScheduledBackup",
            "metadata": meta_json(ctx, &format!("{cluster}-base"), self.app),
            "spec": {
                "schedule": ctx.cfg.backup.schedule,
                "immediate": true,
                "backupOwnerReference": "self",
                "cluster": { "name": cluster },
                "method": "plugin",
                "pluginConfiguration": { "name": BARMAN_PLUGIN },
            }
        })
    }

    /// `cluster` bootstrapped as `name` from this archive, up to `target_time` or its end; the
    /// recovered cluster archives under its own server name in the same ObjectStore, so the
    /// archive it was restored from is never written to.
    pub(crate) fn recover(&self, mut c: Value, name: &str, target_time: Option<&str>) -> Value {
        c["metadata"]["name"] = json!(name);
        let initdb = c["spec"]["bootstrap"]["initdb"].clone();
        // The role and database exist in the backup; `secret` keeps the owner's password managed
        // from the same Secret as before.
        let mut recovery = json!({
            "source": RECOVERY_SOURCE,
            "database": initdb["database"],
            "owner": initdb["owner"],
            "secret": initdb["secret"],
        });
        if let Some(t) = target_time {
            recovery["recoveryTarget"] = json!({ "targetTime": t });
        }
        c["spec"]["bootstrap"] = json!({ "recovery": recovery });
        c["spec"]["externalClusters"] = json!([{
            "name": RECOVERY_SOURCE,
            "plugin": {
                "name": BARMAN_PLUGIN,
                "parameters": { "barmanObjectName": self.object_store, "serverName": self.cluster },
            },
        }]);
        c["spec"]["plugins"][0]["parameters"]["serverName"] = json!(name);
        c
    }

    /// The Service that switches clients over to the recovered cluster once the old Cluster
    /// is deleted (CloudNativePG deletes its `-rw` Service with it): the same name, selecting
    /// the recovered cluster's primary, so no component's address changes.
    pub(crate) fn switch_over_service(&self, ctx: &Ctx, recovered: &str) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta_json(ctx, &format!("{}-rw", self.cluster), self.app),
            "spec": {
                "selector": { "cnpg.io/cluster": recovered, "cnpg.io/instanceRole": "primary" },
                "ports": [{ "name": "postgres", "port": 5432, "targetPort": 5432, "protocol": "TCP" }],
            }
        })
    }
}

/// The `externalClusters` entry a recovery reads main's archive through.
pub const RECOVERY_SOURCE: &str = "origin";

/// The objects of main's recovery: the recovered Cluster (to `target_time`, or the end of the
/// archive), its ScheduledBackup and the switch-over Service (applied last).
pub(crate) fn recovery(ctx: &Ctx, name: &str, target_time: Option<&str>) -> Vec<Value> {
    let b = Backups::main(ctx);
    vec![
        b.recover(cluster(ctx), name, target_time),
        b.scheduled_backup(ctx, name),
        b.switch_over_service(ctx, name),
    ]
}
