//! Lawful intercept (feature `li`): the LI PostgreSQL, li-sync, the jobs around them, the key
//! vault, the LI console, and the LI browsing stack (Synapse LI, Element Web LI, Synapse Admin
//! LI) with its access control.
//!
//! Main's side (wal_level, the `li_replicator` role, the setup SQL at bootstrap) is in
//! [`crate::postgres`]; the Secrets in [`crate::secrets`]; the S3 identities and the LI bucket in
//! [`crate::secrets`] and [`crate::media`]; the routes in [`crate::edge`]; NetworkPolicies come
//! from `topology::flows` like every other. See docs/LI.md for the reasons.
//!
//! No CloudNativePG Publication or Subscription is rendered. The publication (FOR ALL TABLES) may
//! only exist once every table has a replica identity, or UPDATE and DELETE fail on main, and the
//! subscription only once the replica has main's schema, or it stalls on the first missing table
//! (seed 004 issue 4.1). A CRD is applied at once, in no particular order with what it depends
//! on; `main_setup_sql` (bootstrap, `li-prepare-main`) and li-sync create both in the right order.
//!
//! Every LI workload runs on the LI nodes (`li.node_label`, with a toleration for a NoSchedule
//! taint of the same key and value) and holds only LI credentials. The one exception is
//! `li-prepare-main`: it needs main's superuser, so it runs on main's side and never on an LI node.
//!
//! No LI pod mounts a service account token but the working-copy job's kubectl containers,
//! which restart Synapse LI after each refresh: their Role allows get, patch, list and watch on
//! Deployment synapse-li and nothing else.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentStrategy};
use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, Job, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::{
    Affinity, Container, EnvVar, NodeAffinity, NodeSelector, NodeSelectorRequirement,
    NodeSelectorTerm, PersistentVolumeClaimVolumeSource, PodSpec, PodTemplateSpec, Probe,
    ServiceAccount, Volume,
};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use mxstack_spec::{Component, Feature, LiSyncMode};
use mxstack_topology::addressing::{Addressing, SynapsePaths};
use mxstack_topology::escrow;
use mxstack_topology::flows::Party;
use mxstack_topology::li::{self, LI_DATABASE, LI_ROLE, WORKING_COPY_DATABASE};
use mxstack_topology::li_browsing::{self, WORKING_COPY_ROLE};
use mxstack_topology::li_console::{self, CONSOLE_DB_ROLE};
use mxstack_topology::registry as reg;
use mxstack_topology::sizing::Resources;
use mxstack_topology::synapse::to_yaml;
use serde_json::{json, Value};

use crate::edge::GATE_USER_HEADER;
use crate::meta::*;
use crate::postgres::{postgres_storage, superuser_secret, Backups};
use crate::secrets::*;
use crate::{Ctx, Out, Phase};

// Workload names are the parties' names (the flows and the checks know them by these).
pub const SYNAPSE_LI: &str = Party::SynapseLi.as_str();
pub const ELEMENT_LI: &str = Party::ElementLi.as_str();
pub const SYNAPSE_ADMIN_LI: &str = Party::SynapseAdminLi.as_str();
pub const LI_PREPARE_MAIN: &str = Party::LiPrepareMain.as_str();
pub const LI_DUMP: &str = Party::LiDump.as_str();
pub const LI_WORKING_COPY: &str = Party::LiWorkingCopy.as_str();
/// `app.kubernetes.io/name` of the LI cluster's objects.
pub const LI_POSTGRES_APP: &str = Party::LiPostgres.as_str();
/// li-sync's config file (`topology::li::li_sync_config`), shared by li-sync and every LI job.
pub const LI_SYNC_CONFIG: &str = "li-sync-config";
pub const LI_SYNC_CONFIG_DIR: &str = "/etc/mxstack";
pub const LI_SYNC_CONFIG_FILE: &str = "li-sync.yaml";
pub const SYNAPSE_LI_CONFIG: &str = "synapse-li-config";
pub const ELEMENT_LI_CONFIG: &str = "element-li-config";
pub const SYNAPSE_ADMIN_LI_CONFIG: &str = "synapse-admin-li-config";
/// The Database object of the browsing stack's working copy.
pub const WORKING_COPY_DATABASE_OBJECT: &str = "synapse-li-work";

const FILE_LI_SYNC: &str = "li-sync.yaml";
const FILE_KEY_VAULT: &str = "key-vault.yaml";
/// The key vault's config (`topology::escrow::key_vault_config`).
pub const KEY_VAULT_CONFIG: &str = "key-vault-config";
pub const KEY_VAULT_CONFIG_FILE: &str = "key-vault.yaml";
/// The key vault's SQLite volume.
pub const KEY_VAULT_DATA: &str = "key-vault-data";
pub const KEY_VAULT_DATA_DIR: &str = "/var/lib/mxstack-key-vault";
/// A few kilobytes per escrowed key version.
const KEY_VAULT_DATA_SIZE: &str = "5Gi";
const KEY_VAULT_RESOURCES: Resources = Resources {
    cpu_millis: 100,
    memory_mib: 128,
};
const FILE_LI_CONSOLE: &str = "li-console.yaml";
/// The LI console's config (`topology::li_console::console_config`).
pub const LI_CONSOLE_CONFIG: &str = "li-console-config";
pub const LI_CONSOLE_CONFIG_FILE: &str = "li-console.yaml";
/// The LI console's SQLite volume (accounts, sessions, warrants, the audit log).
pub const LI_CONSOLE_DATA: &str = "li-console-data";
pub const LI_CONSOLE_DATA_DIR: &str = "/data";
/// The audit log only grows; evidence exports are streamed, never kept.
const LI_CONSOLE_DATA_SIZE: &str = "5Gi";
/// A handful of investigators; an export holds one media object at a time in memory.
const LI_CONSOLE_RESOURCES: Resources = Resources {
    cpu_millis: 250,
    memory_mib: 512,
};
const FILE_SYNAPSE_LI: &str = "synapse-li.yaml";
const FILE_ELEMENT_LI: &str = "element-li.yaml";
const FILE_ADMIN_LI: &str = "synapse-admin-li.yaml";
const FILE_LI_POSTGRES: &str = "li-postgres.yaml";
/// The user images/mxstack/Dockerfile runs as.
const MXSTACK_UID: i64 = 10001;
/// `nginx` in the nginx-unprivileged base of the Element image and in nginx:alpine.
const NGINX_UID: i64 = 101;
/// Two instances on two LI nodes: the replica survives losing one.
const LI_POSTGRES_INSTANCES: u32 = 2;
/// Share of an LI node's disk for the LI PostgreSQL data volume (replica, history and working
/// copy); the rest holds the WAL volume, images, logs and emptyDirs.
const LI_POSTGRES_DISK_PERCENT: u64 = 70;
const LI_POSTGRES_MAX_CONNECTIONS: u32 = 100;
const LI_SYNC_RESOURCES: Resources = Resources {
    cpu_millis: 250,
    memory_mib: 256,
};
const LI_JOB_RESOURCES: Resources = Resources {
    cpu_millis: 500,
    memory_mib: 512,
};
/// kubectl in the working-copy job: two API calls and a watch.
const KUBECTL_RESOURCES: Resources = Resources {
    cpu_millis: 50,
    memory_mib: 128,
};
/// The working-copy job's containers after the refresh: restart Synapse LI, then wait for it.
pub const RESTART_SYNAPSE_LI: &str = "restart-synapse-li";
pub const WAIT_SYNAPSE_LI: &str = "wait-synapse-li";
/// How long the job waits for the restarted Synapse LI (its startup probe allows 10 minutes
/// for migrating a freshly refreshed copy).
pub const SYNAPSE_LI_ROLLOUT_TIMEOUT: &str = "10m";
/// kubectl's HOME (its discovery cache); the root filesystem is read-only.
const KUBECTL_HOME: &str = "/home/kubectl";
/// One process for a handful of investigators.
const SYNAPSE_LI_RESOURCES: Resources = Resources {
    cpu_millis: 1000,
    memory_mib: 2048,
};

pub fn render(ctx: &Ctx, out: &mut Out) {
    li_postgres(ctx, out);
    li_sync(ctx, out);
    key_vault(ctx, out);
    li_console(ctx, out);
    synapse_li(ctx, out);
    element_li(ctx, out);
    synapse_admin_li(ctx, out);
    crate::edge::li_access(ctx, out);
}

// ---------------------------------------------------------------------------------------------
// Placement

/// Puts a pod on the LI nodes (and only there).
fn on_li_nodes(ctx: &Ctx, pod: &mut PodSpec) {
    let (key, value) = li_node_label(ctx);
    pod.node_selector = Some([(key, value)].into());
    pod.tolerations = Some(li_tolerations(ctx));
}

/// Keeps a pod off the LI nodes, tainted or not (the one job that holds main's superuser).
fn off_li_nodes(ctx: &Ctx, pod: &mut PodSpec) {
    let (key, value) = li_node_label(ctx);
    pod.affinity = Some(Affinity {
        node_affinity: Some(NodeAffinity {
            required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                node_selector_terms: vec![NodeSelectorTerm {
                    match_expressions: Some(vec![NodeSelectorRequirement {
                        key,
                        operator: "NotIn".into(),
                        values: Some(vec![value]),
                    }]),
                    ..Default::default()
                }],
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
}

// ---------------------------------------------------------------------------------------------
// The LI PostgreSQL

/// The LI node role of the sizing: (vCPU, RAM GB, disk GB) per node.
fn li_node(ctx: &Ctx) -> (u32, u32, u32) {
    ctx.t
        .sizing
        .nodes
        .iter()
        .find(|n| n.role == "lawful-intercept")
        .map(|n| (n.vcpu, n.ram_gb, n.storage_gb))
        .expect("the sizing has lawful-intercept nodes when feature li is on")
}

/// The LI cluster: two instances on the LI nodes, the same PostgreSQL image (so the same major
/// version) as main, initdb's database `synapse_li` owned by li-sync's role.
fn li_postgres_cluster(ctx: &Ctx) -> Value {
    let (vcpu, ram_gb, disk_gb) = li_node(ctx);
    // Half of an LI node for PostgreSQL; the browsing stack and li-sync share the rest.
    let resources = Resources {
        cpu_millis: vcpu * 1000 / 2,
        memory_mib: ram_gb * 1024 / 2,
    };
    let data = gib_size(u64::from(disk_gb) * LI_POSTGRES_DISK_PERCENT / 100);
    let (key, value) = li_node_label(ctx);
    let tolerations = serde_json::to_value(li_tolerations(ctx)).expect("tolerations serialize");
    json!({
        "apiVersion": "postgresql.cnpg.io/v1",
        "kind": "Cluster",
        "metadata": meta_json(ctx, reg::li_postgres::CLUSTER, LI_POSTGRES_APP),
        "spec": {
            "instances": LI_POSTGRES_INSTANCES,
            "imageName": ctx.cfg.images.postgres,
            "primaryUpdateStrategy": "unsupervised",
            // li_sync is the superuser li-sync needs (below); nobody uses `postgres`.
            "enableSuperuserAccess": false,
            "postgresql": {
                "parameters": {
                    "max_connections": LI_POSTGRES_MAX_CONNECTIONS.to_string(),
                    "shared_buffers": format!("{}GB", (ram_gb / 8).max(1)),
                    "effective_cache_size": format!("{}GB", (ram_gb * 3 / 8).max(1)),
                    // Retry soon after the replica or main was away.
                    "wal_retrieve_retry_interval": "5s",
                },
                // Evidence is not lost when the LI primary fails: a commit waits for the standby
                // while it is healthy (preferred: the replica keeps applying while it restarts).
                "synchronous": { "method": "any", "number": 1, "dataDurability": "preferred" },
            },
            "bootstrap": {
                "initdb": {
                    "database": LI_DATABASE,
                    "owner": LI_ROLE,
                    "secret": { "name": LI_DB_CREDENTIALS },
                    "encoding": "UTF8",
                    "localeCollate": "C",
                    "localeCType": "C",
                }
            },
            "managed": {
                "roles": [
                    {
                        // li-sync creates the subscription (a superuser is required on
                        // PostgreSQL 15; 16+ would accept pg_create_subscription) and its ENABLE
                        // ALWAYS history triggers; the dump and working-copy jobs replace whole
                        // schemas. A superuser of the LI cluster only, whose password only
                        // li-sync and the LI jobs hold; the local runner gives it the same.
                        "name": LI_ROLE,
                        "ensure": "present",
                        "comment": "li-sync: owns the replica, its subscription and history",
                        "login": true,
                        "superuser": true,
                        "passwordSecret": { "name": LI_DB_CREDENTIALS },
                    },
                    {
                        "name": WORKING_COPY_ROLE,
                        "ensure": "present",
                        "comment": "Synapse LI: owns the working copy only",
                        "login": true,
                        "superuser": false,
                        "createdb": false,
                        "createrole": false,
                        "replication": false,
                        "passwordSecret": { "name": LI_WORKING_COPY_CREDENTIALS },
                    },
                    {
                        // The LI console reads the replica and writes nothing (the local runner
                        // grants the same: `li_console::console_role_sql`). Memberships of a
                        // managed role are reconciled, so this list is the whole of its rights.
                        "name": CONSOLE_DB_ROLE,
                        "ensure": "present",
                        "comment": "LI console: reads the replica, writes nothing",
                        "login": true,
                        "superuser": false,
                        "createdb": false,
                        "createrole": false,
                        "replication": false,
                        "inRoles": ["pg_read_all_data"],
                        "passwordSecret": { "name": LI_CONSOLE_DB_CREDENTIALS },
                    },
                ]
            },
            "storage": postgres_storage(ctx, &data),
            "walStorage": postgres_storage(ctx, &ctx.t.sizing.postgres.wal_storage),
            "resources": {
                "requests": { "cpu": resources.cpu(), "memory": resources.memory() },
                "limits": { "memory": resources.memory() },
            },
            "affinity": {
                "enablePodAntiAffinity": true,
                "podAntiAffinityType": "required",
                "topologyKey": "kubernetes.io/hostname",
                "nodeSelector": { key: value },
                "tolerations": tolerations,
            },
            // Continuous WAL archiving and base backups to the LI backup bucket, with the LI
            // backup identity: main's credentials cannot touch them (topology::backup).
            "plugins": Backups::li(ctx).archiver(),
        }
    })
}

/// The objects of the LI cluster's recovery as `name`: always to the end of its archive (the
/// most evidence it holds, whatever time main is restored to; `mxstack li reattach` then keeps
/// what main no longer has in history), its ScheduledBackup, and the switch-over Service
/// `li-pg-rw`.
pub(crate) fn recovery(ctx: &Ctx, name: &str) -> Vec<Value> {
    let b = Backups::li(ctx);
    vec![
        b.recover(li_postgres_cluster(ctx), name, None),
        b.scheduled_backup(ctx, name),
        b.switch_over_service(ctx, name),
    ]
}

/// The browsing stack's working copy, owned by Synapse LI's role. It exists for good: the
/// working-copy refresh replaces its contents and never drops the database.
fn working_copy_database(ctx: &Ctx) -> Value {
    json!({
        "apiVersion": "postgresql.cnpg.io/v1",
        "kind": "Database",
        "metadata": meta_json(ctx, WORKING_COPY_DATABASE_OBJECT, LI_POSTGRES_APP),
        "spec": {
            "name": WORKING_COPY_DATABASE,
            "owner": WORKING_COPY_ROLE,
            "cluster": { "name": reg::li_postgres::CLUSTER },
            "ensure": "present",
            // Synapse refuses a database whose collation is not C (allow_unsafe_locale: false).
            "encoding": "UTF8",
            "localeCollate": "C",
            "localeCType": "C",
            "template": "template0",
            "databaseReclaimPolicy": "retain",
        }
    })
}

fn li_postgres(ctx: &Ctx, out: &mut Out) {
    let b = Backups::li(ctx);
    out.add(
        Phase::Infrastructure,
        FILE_LI_POSTGRES,
        li_postgres_cluster(ctx),
    );
    out.add(Phase::Infrastructure, FILE_LI_POSTGRES, b.object_store(ctx));
    out.add(
        Phase::Infrastructure,
        FILE_LI_POSTGRES,
        b.scheduled_backup(ctx, b.cluster),
    );
    out.add(
        Phase::Infrastructure,
        FILE_LI_POSTGRES,
        working_copy_database(ctx),
    );
}

// ---------------------------------------------------------------------------------------------
// li-sync and its jobs

fn li_sync_config_path() -> String {
    format!("{LI_SYNC_CONFIG_DIR}/{LI_SYNC_CONFIG_FILE}")
}

/// `mxstack <args...> --li-sync-config /etc/mxstack/li-sync.yaml`.
fn mxstack_li_command(args: &[&str]) -> Vec<String> {
    std::iter::once("mxstack")
        .chain(args.iter().copied())
        .map(String::from)
        .chain(["--li-sync-config".to_string(), li_sync_config_path()])
        .collect()
}

/// The password of li_replicator (reads main) for li-sync's `main` connection.
fn env_main_password() -> EnvVar {
    env_secret(
        li::ENV_MAIN_PASSWORD,
        LI_REPLICATION_CREDENTIALS,
        DB_PASSWORD_KEY,
    )
}

/// The password of li_sync (the LI cluster's superuser) for li-sync's `replica` connection.
fn env_li_password() -> EnvVar {
    env_secret(li::ENV_LI_PASSWORD, LI_DB_CREDENTIALS, DB_PASSWORD_KEY)
}

fn env_li_s3() -> Vec<EnvVar> {
    vec![
        env_secret(
            li::ENV_S3_ACCESS_KEY,
            LI_SYNC_S3_CREDENTIALS,
            S3_ACCESS_KEY_ID,
        ),
        env_secret(li::ENV_S3_SECRET_KEY, LI_SYNC_S3_CREDENTIALS, S3_SECRET_KEY),
    ]
}

/// A container of the mxstack image that reads li-sync's config.
fn mxstack_container(ctx: &Ctx, name: &str, command: Vec<String>, env: Vec<EnvVar>) -> Container {
    Container {
        command: Some(command),
        env: Some(env),
        resources: Some(resources(&LI_JOB_RESOURCES)),
        volume_mounts: Some(vec![
            mount("config", LI_SYNC_CONFIG_DIR),
            mount_rw("tmp", "/tmp"),
        ]),
        ..container(name, &ctx.cfg.images.mxstack)
    }
}

fn mxstack_pod(container: Container, restart_policy: Option<&str>) -> PodSpec {
    PodSpec {
        containers: vec![container],
        restart_policy: restart_policy.map(String::from),
        volumes: Some(vec![
            volume_config_map("config", LI_SYNC_CONFIG),
            volume_empty("tmp"),
        ]),
        security_context: Some(pod_security(MXSTACK_UID)),
        automount_service_account_token: Some(false),
        ..Default::default()
    }
}

/// A Job's spec; its pods carry `app.kubernetes.io/name: <app>`, which their NetworkPolicy selects.
fn job_template(app: &str, pod: PodSpec, backoff_limit: i32) -> JobSpec {
    JobSpec {
        backoff_limit: Some(backoff_limit),
        template: PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(labels(app)),
                ..Default::default()
            }),
            spec: Some(pod),
        },
        ..Default::default()
    }
}

/// The pod of an LI job: one container of the mxstack image, on the LI nodes.
fn li_job_pod(ctx: &Ctx, name: &str, args: &[&str], env: Vec<EnvVar>) -> PodSpec {
    let c = mxstack_container(ctx, name, mxstack_li_command(args), env);
    let mut pod = mxstack_pod(c, Some("Never"));
    on_li_nodes(ctx, &mut pod);
    pod
}

/// A CronJob on the LI nodes; a run never overlaps the previous one.
fn li_cron_job(ctx: &Ctx, name: &str, schedule: &str, pod: PodSpec) -> CronJob {
    let job = job_template(name, pod, 2);
    CronJob {
        metadata: meta(ctx, name, name),
        spec: Some(CronJobSpec {
            schedule: schedule.into(),
            concurrency_policy: Some("Forbid".into()),
            successful_jobs_history_limit: Some(3),
            failed_jobs_history_limit: Some(3),
            job_template: JobTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(name)),
                    ..Default::default()
                }),
                spec: Some(job),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn li_sync(ctx: &Ctx, out: &mut Out) {
    let config = to_yaml(&li::li_sync_config(
        ctx.t,
        &ctx.addr,
        &format!("0.0.0.0:{}", reg::li_sync::HTTP.number),
    ));
    let hash = config_hash(&[&config]);
    out.add(
        Phase::Li,
        FILE_LI_SYNC,
        config_map(
            ctx,
            LI_SYNC_CONFIG,
            reg::li_sync::COMPONENT.name(),
            map(&[(LI_SYNC_CONFIG_FILE, &config)]),
        ),
    );
    let sel = map(&[(LABEL_NAME, reg::li_sync::COMPONENT.name())]);
    let mut svc = service(
        ctx,
        reg::li_sync::COMPONENT.name(),
        reg::li_sync::COMPONENT.name(),
        &sel,
        vec![service_port_of(reg::li_sync::HTTP)],
        false,
    );
    if ctx.has(Feature::Monitoring) {
        label_for_scraping(&mut svc, reg::li_sync::COMPONENT.name());
    }
    out.add(Phase::Li, FILE_LI_SYNC, svc);

    let mut env = vec![env_main_password(), env_li_password()];
    env.extend(env_li_s3());
    let c = Container {
        ports: Some(vec![container_port_of(reg::li_sync::HTTP)]),
        resources: Some(resources(&LI_SYNC_RESOURCES)),
        readiness_probe: Some(ready_probe(&reg::li_sync::COMPONENT, 10, 3)),
        liveness_probe: Some(live_probe(&reg::li_sync::COMPONENT, 20, 6)),
        ..mxstack_container(
            ctx,
            reg::li_sync::COMPONENT.name(),
            vec![
                "mxstack".into(),
                "serve".into(),
                "li-sync".into(),
                "--config".into(),
                li_sync_config_path(),
            ],
            env,
        )
    };
    let mut pod = mxstack_pod(c, None);
    on_li_nodes(ctx, &mut pod);
    let mut w = Workload::new(
        reg::li_sync::COMPONENT.name(),
        reg::li_sync::COMPONENT.name(),
        1,
        sel,
        pod,
    );
    w.config_hash = Some(hash);
    // One li-sync at a time: two would race on the subscription and the history.
    out.add(Phase::Li, FILE_LI_SYNC, recreate(w.deployment(ctx)));

    out.add(Phase::Li, FILE_LI_SYNC, prepare_main_job(ctx));
    if ctx.cfg.li.sync == LiSyncMode::Dump {
        let pod = li_job_pod(
            ctx,
            LI_DUMP,
            &["li", "dump"],
            vec![env_main_password(), env_li_password()],
        );
        out.add(
            Phase::Li,
            FILE_LI_SYNC,
            li_cron_job(ctx, LI_DUMP, &ctx.cfg.li.dump_schedule, pod),
        );
    }
    out.add(Phase::Li, FILE_LI_SYNC, working_copy_service_account(ctx));
    out.add(Phase::Li, FILE_LI_SYNC, working_copy_role(ctx));
    out.add(Phase::Li, FILE_LI_SYNC, working_copy_role_binding(ctx));
    out.add(
        Phase::Li,
        FILE_LI_SYNC,
        li_cron_job(
            ctx,
            LI_WORKING_COPY,
            &ctx.cfg.li.working_copy_schedule,
            working_copy_pod(ctx),
        ),
    );
}

// ---------------------------------------------------------------------------------------------
// The key vault

/// The key vault on the LI nodes: one pod (SQLite on a ReadWriteOnce volume, so Recreate), the
/// store key from the Secret Synapse main reads it from, the retrieval key from its own Secret,
/// and only the public recipient of `key_vault_age_identity` in its config.
fn key_vault(ctx: &Ctx, out: &mut Out) {
    // Secrets::load refused an identity that does not parse; an empty recipient (never
    // expected) would make the vault refuse to start, naming `recipients.vault`.
    let recipient = ctx.secrets.key_vault_recipient().unwrap_or_default();
    let config = to_yaml(&escrow::key_vault_config(
        &format!("0.0.0.0:{}", reg::key_vault::HTTP.number),
        &format!("{KEY_VAULT_DATA_DIR}/{}", escrow::VAULT_SQLITE_FILE),
        &recipient,
        &ctx.secrets.li_console_public_key().unwrap_or_default(),
    ));
    let hash = config_hash(&[&config]);
    out.add(
        Phase::Li,
        FILE_KEY_VAULT,
        config_map(
            ctx,
            KEY_VAULT_CONFIG,
            reg::key_vault::COMPONENT.name(),
            map(&[(KEY_VAULT_CONFIG_FILE, &config)]),
        ),
    );
    let mut pvc = pvc_template(ctx, KEY_VAULT_DATA, KEY_VAULT_DATA_SIZE);
    pvc.metadata = meta(ctx, KEY_VAULT_DATA, reg::key_vault::COMPONENT.name());
    out.add(Phase::Li, FILE_KEY_VAULT, pvc);
    let sel = map(&[(LABEL_NAME, reg::key_vault::COMPONENT.name())]);
    let mut svc = service(
        ctx,
        reg::key_vault::COMPONENT.name(),
        reg::key_vault::COMPONENT.name(),
        &sel,
        vec![service_port_of(reg::key_vault::HTTP)],
        false,
    );
    if ctx.has(Feature::Monitoring) {
        label_for_scraping(&mut svc, reg::key_vault::COMPONENT.name());
    }
    out.add(Phase::Li, FILE_KEY_VAULT, svc);
    let c = Container {
        command: Some(vec![
            "mxstack".into(),
            "serve".into(),
            "key-vault".into(),
            "--config".into(),
            format!("{LI_SYNC_CONFIG_DIR}/{KEY_VAULT_CONFIG_FILE}"),
        ]),
        env: Some(vec![
            env_secret(
                escrow::ENV_STORE_API_KEY,
                KEY_VAULT_API_KEY,
                KEY_VAULT_STORE_API_KEY,
            ),
            env_secret(
                escrow::ENV_RETRIEVAL_API_KEY,
                KEY_VAULT_RETRIEVAL,
                KEY_VAULT_RETRIEVAL_API_KEY,
            ),
            // Present only while a rotation runs (docs/ROTATION.md).
            env_secret_optional(
                &escrow::other_env(escrow::ENV_STORE_API_KEY),
                KEY_VAULT_API_KEY,
                KEY_VAULT_OTHER_STORE_API_KEY,
            ),
            env_secret_optional(
                &escrow::other_env(escrow::ENV_RETRIEVAL_API_KEY),
                KEY_VAULT_RETRIEVAL,
                KEY_VAULT_OTHER_RETRIEVAL_API_KEY,
            ),
        ]),
        ports: Some(vec![container_port_of(reg::key_vault::HTTP)]),
        resources: Some(resources(&KEY_VAULT_RESOURCES)),
        readiness_probe: Some(ready_probe(&reg::key_vault::COMPONENT, 10, 3)),
        liveness_probe: Some(live_probe(&reg::key_vault::COMPONENT, 20, 6)),
        volume_mounts: Some(vec![
            mount("config", LI_SYNC_CONFIG_DIR),
            mount_rw("data", KEY_VAULT_DATA_DIR),
            mount_rw("tmp", "/tmp"),
        ]),
        ..container(reg::key_vault::COMPONENT.name(), &ctx.cfg.images.mxstack)
    };
    let mut pod = PodSpec {
        containers: vec![c],
        volumes: Some(vec![
            volume_config_map("config", KEY_VAULT_CONFIG),
            volume_pvc("data", KEY_VAULT_DATA),
            volume_empty("tmp"),
        ]),
        security_context: Some(pod_security(MXSTACK_UID)),
        automount_service_account_token: Some(false),
        ..Default::default()
    };
    on_li_nodes(ctx, &mut pod);
    let mut w = Workload::new(
        reg::key_vault::COMPONENT.name(),
        reg::key_vault::COMPONENT.name(),
        1,
        sel,
        pod,
    );
    w.config_hash = Some(hash);
    out.add(Phase::Li, FILE_KEY_VAULT, recreate(w.deployment(ctx)));
}

// ---------------------------------------------------------------------------------------------
// The LI console

/// The LI console's config file (`topology::li_console::console_config`) with the Kubernetes
/// endpoints: the LI cluster's primary, the key vault's Service, the S3 endpoint and LI bucket
/// Synapse LI reads, clamd with antivirus. Behind TLS at the edge, so the session cookie is
/// `Secure`.
pub fn li_console_config(ctx: &Ctx) -> Value {
    let pg = ctx.addr.li_postgres();
    let s3 = ctx.addr.s3_endpoint();
    let bucket = ctx.cfg.li.media_bucket(&ctx.cfg.media);
    li_console::console_config(&li_console::ConsoleEndpoints {
        listen: &format!("0.0.0.0:{}", reg::li_console::HTTP.number),
        database: &format!("{LI_CONSOLE_DATA_DIR}/{}", li_console::CONSOLE_SQLITE_FILE),
        server_name: &ctx.cfg.domain,
        replica: (&pg.host, pg.port, LI_DATABASE),
        key_vault_url: &format!("http://{}", ctx.addr.key_vault()),
        media: (&s3, &bucket, &ctx.cfg.media.region),
        clamd: ctx
            .has(Feature::Antivirus)
            .then(|| ctx.addr.clamd().to_string()),
        secure_cookies: true,
        metrics_listen: Some(&format!("0.0.0.0:{}", reg::li_console::METRICS.number)),
    })
}

/// The LI console on the LI nodes: one pod (SQLite on a ReadWriteOnce volume, so Recreate). It
/// reads the replica as `li_console`, retrieves escrowed keys with the retrieval key, opens them
/// with the vault identity (its own Secret, which nothing else mounts: the vault has only the
/// public recipient), signs evidence with its own key, and reads LI media with Synapse LI's
/// read-only S3 identity. Metrics on their own port (9094), which only Prometheus reaches.
fn li_console(ctx: &Ctx, out: &mut Out) {
    let config = to_yaml(&li_console_config(ctx));
    let hash = config_hash(&[&config]);
    out.add(
        Phase::Li,
        FILE_LI_CONSOLE,
        config_map(
            ctx,
            LI_CONSOLE_CONFIG,
            reg::li_console::COMPONENT.name(),
            map(&[(LI_CONSOLE_CONFIG_FILE, &config)]),
        ),
    );
    let mut pvc = pvc_template(ctx, LI_CONSOLE_DATA, LI_CONSOLE_DATA_SIZE);
    pvc.metadata = meta(ctx, LI_CONSOLE_DATA, reg::li_console::COMPONENT.name());
    out.add(Phase::Li, FILE_LI_CONSOLE, pvc);
    let sel = map(&[(LABEL_NAME, reg::li_console::COMPONENT.name())]);
    let mut svc = service(
        ctx,
        reg::li_console::COMPONENT.name(),
        reg::li_console::COMPONENT.name(),
        &sel,
        vec![
            service_port_of(reg::li_console::HTTP),
            service_port_of(reg::li_console::METRICS),
        ],
        false,
    );
    if ctx.has(Feature::Monitoring) {
        label_for_scraping(&mut svc, reg::li_console::COMPONENT.name());
    }
    out.add(Phase::Li, FILE_LI_CONSOLE, svc);
    let c = Container {
        command: Some(vec![
            "mxstack".into(),
            "serve".into(),
            "li-console".into(),
            "--config".into(),
            format!("{LI_SYNC_CONFIG_DIR}/{LI_CONSOLE_CONFIG_FILE}"),
        ]),
        env: Some(vec![
            env_secret(
                li_console::ENV_DB_PASSWORD,
                LI_CONSOLE_DB_CREDENTIALS,
                DB_PASSWORD_KEY,
            ),
            env_secret(
                escrow::ENV_RETRIEVAL_API_KEY,
                KEY_VAULT_RETRIEVAL,
                KEY_VAULT_RETRIEVAL_API_KEY,
            ),
            env_secret(
                li_console::ENV_VAULT_IDENTITY,
                LI_CONSOLE_VAULT_IDENTITY,
                LI_CONSOLE_VAULT_IDENTITY_KEY,
            ),
            env_secret(
                li_console::ENV_SIGNING_KEY,
                LI_CONSOLE_SIGNING_KEY,
                LI_CONSOLE_SIGNING_KEY_KEY,
            ),
            env_secret(
                li_console::ENV_S3_ACCESS_KEY,
                SYNAPSE_LI_S3_CREDENTIALS,
                S3_ACCESS_KEY_ID,
            ),
            env_secret(
                li_console::ENV_S3_SECRET_KEY,
                SYNAPSE_LI_S3_CREDENTIALS,
                S3_SECRET_KEY,
            ),
        ]),
        ports: Some(vec![
            container_port_of(reg::li_console::HTTP),
            container_port_of(reg::li_console::METRICS),
        ]),
        resources: Some(resources(&LI_CONSOLE_RESOURCES)),
        readiness_probe: Some(ready_probe(&reg::li_console::COMPONENT, 10, 3)),
        liveness_probe: Some(live_probe(&reg::li_console::COMPONENT, 20, 6)),
        volume_mounts: Some(vec![
            mount("config", LI_SYNC_CONFIG_DIR),
            mount_rw("data", LI_CONSOLE_DATA_DIR),
            mount_rw("tmp", "/tmp"),
        ]),
        ..container(reg::li_console::COMPONENT.name(), &ctx.cfg.images.mxstack)
    };
    let mut pod = PodSpec {
        containers: vec![c],
        volumes: Some(vec![
            volume_config_map("config", LI_CONSOLE_CONFIG),
            volume_pvc("data", LI_CONSOLE_DATA),
            volume_empty("tmp"),
        ]),
        security_context: Some(pod_security(MXSTACK_UID)),
        automount_service_account_token: Some(false),
        ..Default::default()
    };
    on_li_nodes(ctx, &mut pod);
    let mut w = Workload::new(
        reg::li_console::COMPONENT.name(),
        reg::li_console::COMPONENT.name(),
        1,
        sel,
        pod,
    );
    w.config_hash = Some(hash);
    out.add(Phase::Li, FILE_LI_CONSOLE, recreate(w.deployment(ctx)));
}

/// A pod volume of a PersistentVolumeClaim, writable.
fn volume_pvc(name: &str, claim: &str) -> Volume {
    Volume {
        name: name.into(),
        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
            claim_name: claim.into(),
            read_only: Some(false),
        }),
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------------------------
// The working-copy job: refresh, then restart Synapse LI (it caches what it reads)

/// The refresh as an init container, so nothing else runs unless it succeeded (a failed refresh
/// leaves Synapse LI serving the previous copy); then `kubectl rollout restart` (another init
/// container) and `kubectl rollout status` (the pod's container), so the job succeeds only once
/// the new Synapse LI is ready. Two containers rather than a shell: the kubectl image needs none.
///
/// Only the kubectl containers hold an API token: a projected volume of the job's own
/// ServiceAccount (whose Role reaches nothing but Deployment synapse-li), not the automatic
/// mount, which would put it into the refresh container as well.
fn working_copy_pod(ctx: &Ctx) -> PodSpec {
    let mut pod = li_job_pod(
        ctx,
        LI_WORKING_COPY,
        &["li", "refresh-working-copy"],
        vec![env_li_password()],
    );
    let mut init = std::mem::take(&mut pod.containers);
    init.push(kubectl_container(
        ctx,
        RESTART_SYNAPSE_LI,
        &["rollout", "restart", &format!("deployment/{SYNAPSE_LI}")],
    ));
    pod.init_containers = Some(init);
    pod.containers = vec![kubectl_container(
        ctx,
        WAIT_SYNAPSE_LI,
        &[
            "rollout",
            "status",
            &format!("deployment/{SYNAPSE_LI}"),
            &format!("--timeout={SYNAPSE_LI_ROLLOUT_TIMEOUT}"),
        ],
    )];
    pod.service_account_name = Some(LI_WORKING_COPY.into());
    pod.volumes
        .get_or_insert_with(Vec::new)
        .extend([api_access_volume(), volume_empty("kubectl-home")]);
    pod
}

/// `kubectl <args> -n <namespace>` from `images.kubectl`, with the job's API token.
fn kubectl_container(ctx: &Ctx, name: &str, args: &[&str]) -> Container {
    let command = std::iter::once("kubectl")
        .chain(args.iter().copied())
        .chain(["-n", ctx.ns()])
        .map(String::from)
        .collect();
    Container {
        command: Some(command),
        env: Some(vec![env("HOME", KUBECTL_HOME)]),
        resources: Some(resources(&KUBECTL_RESOURCES)),
        volume_mounts: Some(vec![
            mount(API_ACCESS_VOLUME, SERVICE_ACCOUNT_DIR),
            mount_rw("kubectl-home", KUBECTL_HOME),
        ]),
        ..container(name, &ctx.cfg.images.kubectl)
    }
}

/// The working-copy job's identity. Nothing mounts its token automatically.
fn working_copy_service_account(ctx: &Ctx) -> ServiceAccount {
    ServiceAccount {
        metadata: meta(ctx, LI_WORKING_COPY, LI_WORKING_COPY),
        automount_service_account_token: Some(false),
        ..Default::default()
    }
}

/// What `kubectl rollout restart` (get, then a patch of the pod template's
/// `kubectl.kubernetes.io/restartedAt` annotation) and `kubectl rollout status` (get, then list
/// and watch with the field selector `metadata.name=synapse-li`, which is what lets RBAC
/// restrict list and watch by name) need, on Deployment synapse-li only. The status of a
/// Deployment is read from the Deployment itself: no ReplicaSet or Pod access.
fn working_copy_role(ctx: &Ctx) -> Role {
    Role {
        metadata: meta(ctx, LI_WORKING_COPY, LI_WORKING_COPY),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["apps".into()]),
            resources: Some(vec!["deployments".into()]),
            resource_names: Some(vec![SYNAPSE_LI.into()]),
            verbs: ["get", "list", "patch", "watch"].map(String::from).into(),
            ..Default::default()
        }]),
    }
}

fn working_copy_role_binding(ctx: &Ctx) -> RoleBinding {
    RoleBinding {
        metadata: meta(ctx, LI_WORKING_COPY, LI_WORKING_COPY),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: LI_WORKING_COPY.into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: LI_WORKING_COPY.into(),
            namespace: Some(ctx.ns().into()),
            ..Default::default()
        }]),
    }
}

/// Prepares an existing main for logical replication (a new cluster got the same SQL at
/// bootstrap); idempotent, so applying it again is harmless. It holds main's superuser: it runs
/// off the LI nodes, and no LI workload shares its Secret.
fn prepare_main_job(ctx: &Ctx) -> Job {
    let superuser = superuser_secret(reg::postgres::CLUSTER);
    let c = mxstack_container(
        ctx,
        LI_PREPARE_MAIN,
        mxstack_li_command(&["li", "prepare-main"]),
        vec![
            env_secret(li::ENV_MAIN_ADMIN_USER, &superuser, "username"),
            env_secret(li::ENV_MAIN_ADMIN_PASSWORD, &superuser, DB_PASSWORD_KEY),
        ],
    );
    let mut pod = mxstack_pod(c, Some("OnFailure"));
    off_li_nodes(ctx, &mut pod);
    Job {
        metadata: meta(ctx, LI_PREPARE_MAIN, LI_PREPARE_MAIN),
        // Retries while main-pg is still starting.
        spec: Some(job_template(LI_PREPARE_MAIN, pod, 20)),
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------------------------
// The browsing stack

/// Synapse LI: one process on the working copy, the LI bucket read-only, the signing key of main.
fn synapse_li(ctx: &Ctx, out: &mut Out) {
    let paths = SynapsePaths::under("/mxstack");
    let hs = to_yaml(&li_browsing::homeserver_yaml(
        ctx.t,
        &ctx.addr,
        reg::synapse::HTTP.number,
        &paths,
    ));
    let log = to_yaml(&li_browsing::log_yaml());
    let hash = config_hash(&[&hs, &log]);
    out.add(
        Phase::Li,
        FILE_SYNAPSE_LI,
        config_map(
            ctx,
            SYNAPSE_LI_CONFIG,
            SYNAPSE_LI,
            map(&[("homeserver.yaml", &hs), ("log.yaml", &log)]),
        ),
    );
    let sel = map(&[(LABEL_NAME, SYNAPSE_LI)]);
    out.add(
        Phase::Li,
        FILE_SYNAPSE_LI,
        service(
            ctx,
            SYNAPSE_LI,
            SYNAPSE_LI,
            &sel,
            vec![service_port_of(reg::synapse::HTTP)],
            false,
        ),
    );
    let dir = |p: &std::path::Path| p.display().to_string();
    let ready = ready_probe(&reg::synapse_li::COMPONENT, 5, 3);
    let c = Container {
        command: Some(vec![
            "python".into(),
            "-m".into(),
            "synapse.app.homeserver".into(),
            "--config-path".into(),
            dir(&paths.homeserver_yaml()),
        ]),
        env: Some(vec![
            env_secret("PGPASSWORD", LI_WORKING_COPY_CREDENTIALS, DB_PASSWORD_KEY),
            env_secret(
                "AWS_ACCESS_KEY_ID",
                SYNAPSE_LI_S3_CREDENTIALS,
                S3_ACCESS_KEY_ID,
            ),
            env_secret(
                "AWS_SECRET_ACCESS_KEY",
                SYNAPSE_LI_S3_CREDENTIALS,
                S3_SECRET_KEY,
            ),
            env("PYTHONUNBUFFERED", "1"),
        ]),
        ports: Some(vec![container_port_of(reg::synapse::HTTP)]),
        resources: Some(resources(&SYNAPSE_LI_RESOURCES)),
        // Synapse may migrate a freshly refreshed working copy on start.
        startup_probe: Some(Probe {
            failure_threshold: Some(120),
            period_seconds: Some(5),
            ..ready.clone()
        }),
        readiness_probe: Some(ready),
        liveness_probe: Some(live_probe(&reg::synapse_li::COMPONENT, 15, 4)),
        volume_mounts: Some(vec![
            mount("config", &dir(&paths.config_dir)),
            mount("signing-key", &dir(&paths.synapse_secrets_dir)),
            mount_rw("media", &dir(&paths.media_store)),
            mount_rw("tmp", "/tmp"),
        ]),
        ..container(SYNAPSE_LI, &ctx.cfg.images.synapse)
    };
    let mut pod = PodSpec {
        containers: vec![c],
        volumes: Some(vec![
            volume_config_map("config", SYNAPSE_LI_CONFIG),
            // Main's signing key and nothing else of synapse-secrets (no macaroon or
            // registration secret: Synapse LI issues its own tokens and registers nobody).
            volume_secret(
                "signing-key",
                SYNAPSE_SECRETS,
                &[(li_browsing::SIGNING_KEY_FILE, li_browsing::SIGNING_KEY_FILE)],
            ),
            // Local cache of media fetched from the LI bucket.
            volume_empty("media"),
            volume_empty("tmp"),
        ]),
        security_context: Some(pod_security(crate::synapse::SYNAPSE_UID)),
        automount_service_account_token: Some(false),
        termination_grace_period_seconds: Some(60),
        ..Default::default()
    };
    on_li_nodes(ctx, &mut pod);
    let mut w = Workload::new(SYNAPSE_LI, SYNAPSE_LI, 1, sel, pod);
    w.config_hash = Some(hash);
    // One Synapse on the working copy at a time.
    out.add(Phase::Li, FILE_SYNAPSE_LI, recreate(w.deployment(ctx)));
}

/// Stops the old pod before the new one starts.
fn recreate(mut d: Deployment) -> Deployment {
    if let Some(spec) = d.spec.as_mut() {
        spec.strategy = Some(DeploymentStrategy {
            type_: Some("Recreate".into()),
            ..Default::default()
        });
    }
    d
}

/// The access log of the LI web servers: client address as the edge saw it, the gate user, the
/// request. Goes to stdout with the pod's log.
fn nginx_access_log() -> String {
    let header_var = format!(
        "$http_{}",
        GATE_USER_HEADER.to_ascii_lowercase().replace('-', "_")
    );
    format!(
        "log_format mxstack_li '$time_iso8601 client=$http_x_forwarded_for gate_user={header_var} \
         \"$request\" $status $body_bytes_sent \"$http_user_agent\"';\n"
    )
}

/// The server block of an LI web UI: headers, the banner on every HTML page, health, and the
/// single-page app's files under `root`.
fn nginx_li_server(root: &str) -> String {
    format!(
        "server {{\n\
         listen {port};\n\
         listen [::]:{port};\n\
         server_name _;\n\
         root {root};\n\
         access_log /dev/stdout mxstack_li;\n\
         server_tokens off;\n\
         add_header X-Frame-Options SAMEORIGIN always;\n\
         add_header X-Content-Type-Options nosniff always;\n\
         add_header Content-Security-Policy \"frame-ancestors 'self'\" always;\n\
         add_header X-Robots-Tag \"noindex, nofollow\" always;\n\
         add_header Cache-Control \"no-cache\" always;\n\
         # The lawful-intercept banner, on every HTML page this server sends (text/html is\n\
         # sub_filter's default type).\n\
         sub_filter_once on;\n\
         sub_filter '</body>' '{}</body>';\n\
         location = /healthz {{ access_log off; return 200 'ok'; }}\n\
         location / {{ try_files $uri $uri/ /index.html; }}\n\
         }}\n",
        li_browsing::banner_html(),
        port = reg::li_web::HTTP.number,
    )
}

/// Element LI's nginx config (the Element image renders it from its templates directory into
/// conf.d, inside the image's `http` block).
pub fn element_li_nginx_template() -> String {
    format!(
        "# Generated by mxstack. Element Web LI: the lawful-intercept banner on every page.\n{}{}",
        nginx_access_log(),
        nginx_li_server("/app")
    )
}

/// Element LI's config.json: Element's own (no outside service) pointed at Synapse LI, with the
/// LI brand and the red theme as the default.
pub fn element_li_config(ctx: &Ctx) -> Value {
    let hosts = ctx.cfg.hostnames();
    let mut cfg = crate::element::config_json(ctx);
    cfg["brand"] = json!(li_browsing::BRAND);
    cfg["default_server_config"]["m.homeserver"]["base_url"] =
        json!(format!("https://{}", hosts.matrix_li));
    cfg["permalink_prefix"] = json!(format!("https://{}", hosts.element_li));
    cfg["default_theme"] = json!(format!("custom-{}", li_browsing::THEME_NAME));
    cfg["setting_defaults"]["custom_themes"] = json!([li_browsing::element_theme()]);
    cfg["setting_defaults"]["UIFeature.registration"] = json!(false);
    cfg["setting_defaults"]["UIFeature.deactivate"] = json!(false);
    cfg["setting_defaults"]["UIFeature.voip"] = json!(false);
    // No calls from an evidence copy.
    cfg["element_call"] = json!({});
    cfg["features"] = json!({ "feature_group_calls": false });
    cfg
}

fn element_li(ctx: &Ctx, out: &mut Out) {
    let config = serde_json::to_string_pretty(&element_li_config(ctx)).expect("json") + "\n";
    let template = element_li_nginx_template();
    let hash = config_hash(&[&config, &template]);
    out.add(
        Phase::Li,
        FILE_ELEMENT_LI,
        config_map(
            ctx,
            ELEMENT_LI_CONFIG,
            ELEMENT_LI,
            map(&[
                ("config.json", &config),
                ("default.conf.template", &template),
            ]),
        ),
    );
    let sel = map(&[(LABEL_NAME, ELEMENT_LI)]);
    out.add(
        Phase::Li,
        FILE_ELEMENT_LI,
        service(
            ctx,
            ELEMENT_LI,
            ELEMENT_LI,
            &sel,
            vec![service_port_of(reg::li_web::HTTP)],
            false,
        ),
    );
    let c = Container {
        ports: Some(vec![container_port_of(reg::li_web::HTTP)]),
        resources: Some(resources(
            &ctx.t.sizing.resources_for(Component::Element, ctx.cfg),
        )),
        readiness_probe: Some(ready_probe(&reg::element_li::COMPONENT, 5, 3)),
        liveness_probe: Some(live_probe(&reg::element_li::COMPONENT, 10, 6)),
        volume_mounts: Some(vec![
            mount_file("config", "/app/config.json", "config.json"),
            // nginx's entrypoint renders templates from here into conf.d at start.
            mount_file(
                "config",
                "/etc/nginx/templates/default.conf.template",
                "default.conf.template",
            ),
            mount_rw("conf-d", "/etc/nginx/conf.d"),
            mount_rw("tmp", "/tmp"),
        ]),
        ..container(ELEMENT_LI, &ctx.cfg.images.element)
    };
    let pod = PodSpec {
        containers: vec![c],
        volumes: Some(vec![
            volume_config_map("config", ELEMENT_LI_CONFIG),
            volume_empty("conf-d"),
            volume_empty("tmp"),
        ]),
        security_context: Some(pod_security(NGINX_UID)),
        automount_service_account_token: Some(false),
        ..Default::default()
    };
    web_deployment(ctx, out, FILE_ELEMENT_LI, ELEMENT_LI, sel, pod, hash);
}

/// Synapse Admin LI's whole nginx.conf: the image's static files (/app) as a non-root user on
/// an unprivileged port, temporary files in /tmp (the root filesystem is read-only).
pub fn synapse_admin_li_nginx_conf() -> String {
    format!(
        "# Generated by mxstack. Synapse Admin LI: the lawful-intercept banner on every page.\n\
         worker_processes 1;\n\
         pid /tmp/nginx.pid;\n\
         error_log /dev/stderr warn;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n\
         include /etc/nginx/mime.types;\n\
         default_type application/octet-stream;\n\
         client_body_temp_path /tmp/client_temp;\n\
         proxy_temp_path /tmp/proxy_temp;\n\
         fastcgi_temp_path /tmp/fastcgi_temp;\n\
         uwsgi_temp_path /tmp/uwsgi_temp;\n\
         scgi_temp_path /tmp/scgi_temp;\n\
         {}{}}}\n",
        nginx_access_log(),
        nginx_li_server("/app")
    )
}

/// Synapse Admin's config.json: it can only talk to Synapse LI.
pub fn synapse_admin_li_config(ctx: &Ctx) -> Value {
    json!({ "restrictBaseUrl": format!("https://{}", ctx.cfg.hostnames().matrix_li) })
}

fn synapse_admin_li(ctx: &Ctx, out: &mut Out) {
    let config = serde_json::to_string_pretty(&synapse_admin_li_config(ctx)).expect("json") + "\n";
    let nginx = synapse_admin_li_nginx_conf();
    let hash = config_hash(&[&config, &nginx]);
    out.add(
        Phase::Li,
        FILE_ADMIN_LI,
        config_map(
            ctx,
            SYNAPSE_ADMIN_LI_CONFIG,
            SYNAPSE_ADMIN_LI,
            map(&[("config.json", &config), ("nginx.conf", &nginx)]),
        ),
    );
    let sel = map(&[(LABEL_NAME, SYNAPSE_ADMIN_LI)]);
    out.add(
        Phase::Li,
        FILE_ADMIN_LI,
        service(
            ctx,
            SYNAPSE_ADMIN_LI,
            SYNAPSE_ADMIN_LI,
            &sel,
            vec![service_port_of(reg::li_web::HTTP)],
            false,
        ),
    );
    let c = Container {
        // The command replaces the image's entrypoint scripts (they rewrite files in /etc/nginx).
        command: Some(vec![
            "nginx".into(),
            "-c".into(),
            "/etc/mxstack-admin/nginx.conf".into(),
            "-g".into(),
            "daemon off;".into(),
        ]),
        ports: Some(vec![container_port_of(reg::li_web::HTTP)]),
        resources: Some(resources(
            &ctx.t.sizing.resources_for(Component::Element, ctx.cfg),
        )),
        readiness_probe: Some(ready_probe(&reg::synapse_admin_li::COMPONENT, 5, 3)),
        liveness_probe: Some(live_probe(&reg::synapse_admin_li::COMPONENT, 10, 6)),
        volume_mounts: Some(vec![
            mount_file("config", "/etc/mxstack-admin/nginx.conf", "nginx.conf"),
            mount_file("config", "/app/config.json", "config.json"),
            mount_rw("tmp", "/tmp"),
        ]),
        ..container(SYNAPSE_ADMIN_LI, &ctx.cfg.images.synapse_admin)
    };
    let pod = PodSpec {
        containers: vec![c],
        volumes: Some(vec![
            volume_config_map("config", SYNAPSE_ADMIN_LI_CONFIG),
            volume_empty("tmp"),
        ]),
        security_context: Some(pod_security(NGINX_UID)),
        automount_service_account_token: Some(false),
        ..Default::default()
    };
    web_deployment(ctx, out, FILE_ADMIN_LI, SYNAPSE_ADMIN_LI, sel, pod, hash);
}

/// One replica on the LI nodes (a handful of investigators; a restart takes seconds).
fn web_deployment(
    ctx: &Ctx,
    out: &mut Out,
    file: &str,
    app: &str,
    sel: Labels,
    mut pod: PodSpec,
    hash: String,
) {
    on_li_nodes(ctx, &mut pod);
    let mut w = Workload::new(app, app, 1, sel, pod);
    w.config_hash = Some(hash);
    out.add(Phase::Li, file, w.deployment(ctx));
}
