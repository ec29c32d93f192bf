//! What `mxstack up` runs: every process with its command, environment, readiness check and the
//! processes it waits for, plus the files it needs. Built from the same topology functions as the
//! Kubernetes target; only addresses and paths differ.

use mxstack_topology::registry as reg;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mxstack_spec::{ComponentOverride, Config, Feature, SecretName, Secrets};
use mxstack_topology::addressing::SynapsePaths;
use mxstack_topology::addressing::SYNAPSE_SECRET_FILES;
use mxstack_topology::antivirus;
use mxstack_topology::escrow;
use mxstack_topology::haproxy::{self, Resolution};
use mxstack_topology::li;
use mxstack_topology::li_console;
use mxstack_topology::synapse::{self, DATABASE_NAME, DATABASE_USER};
use mxstack_topology::{Addressing, Topology, WorkerKind};

use crate::addressing::LocalAddressing;
use crate::backup;

use crate::layout::StateLayout;
pub(crate) use crate::parts::{file, Out, Parts};
pub use crate::parts::{GeneratedFile, Readiness, Service};
pub use crate::programs::Programs;
use crate::shape::Shape;

pub struct LocalPlan {
    pub topology: Topology,
    pub addressing: LocalAddressing,
    pub services: Vec<Service>,
    pub files: Vec<GeneratedFile>,
    pub client_url: String,
    pub postgres_dsn: String,
    pub s3_endpoint: String,
    pub bucket: String,
    pub redis_password: String,
    /// The Redis password a rotation is retiring (Valkey accepts both until it ends).
    pub redis_password_previous: Option<String>,
}

/// The config the local stack runs: the operator's config with the shape's processes per
/// scalable worker group (single writers and the background worker stay single), so
/// instance_map and stream_writers list what really runs.
pub fn local_config(config: &Config, shape: &Shape) -> Config {
    let mut c = config.clone();
    for (component, autoscalable) in crate::shape::SCALABLE {
        let replicas = shape.replicas_of(component);
        c.overrides.insert(
            component,
            ComponentOverride {
                replicas: Some(replicas),
                max_replicas: autoscalable.then_some(replicas),
                ..c.override_for(component)
            },
        );
    }
    c
}

/// Connection pools sized for every process `mxstack scale` may add to a live-scalable group, as
/// Kubernetes sizes them for the autoscaler's maximum: adding a synchrotron or generic worker
/// changes no running process's pool, so it needs no restart.
fn with_headroom(mut t: Topology) -> Topology {
    let groups: Vec<_> = t
        .groups
        .iter()
        .cloned()
        .map(|mut g| {
            if g.kind.autoscalable() {
                g.max_replicas = g.max_replicas.max(crate::shape::MAX_LOCAL_PROCESSES);
            }
            g
        })
        .collect();
    t.budget = mxstack_topology::budget::ConnectionBudget::compute(&t.sizing, &groups);
    t
}

/// The topology the stack of `shape` runs and the addresses it allocates: one place, so that
/// what runs and what reads its addresses (`mxstack verify`) cannot disagree.
pub fn local_topology(
    config: &Config,
    layout: &StateLayout,
    shape: &Shape,
) -> (Topology, LocalAddressing) {
    // 0 replicas: Synapse as one process, every route falling back to main.
    let t = if shape.replicas == 0 {
        Topology::single_process(config)
    } else {
        with_headroom(Topology::build(&local_config(config, shape)))
    };
    let names: Vec<String> = t.processes().iter().map(|p| p.name.clone()).collect();
    let addr = LocalAddressing::new(
        shape.base_port,
        layout.synapse_root(),
        shape.allocation_order(&names),
        t.sizing.redis.instances,
    );
    (t, addr)
}

/// The Synapse upload-scan module, shipped inside this binary so a local stack needs nothing
/// from the source tree.
pub const SYNAPSE_MODULE_SOURCE: &str = include_str!("../../../python/mxstack_synapse/__init__.py");
/// The key escrow module (feature `li`), shipped the same way.
pub const SYNAPSE_ESCROW_MODULE_SOURCE: &str =
    include_str!("../../../python/mxstack_synapse/escrow.py");
/// The push gateway allowlist module (feature `push`), shipped the same way.
pub const SYNAPSE_PUSH_MODULE_SOURCE: &str =
    include_str!("../../../python/mxstack_synapse/push.py");
/// Files of the `mxstack_synapse` package, relative to [`synapse_python_dir`].
pub const SYNAPSE_MODULE_FILES: [(&str, &str); 3] = [
    ("mxstack_synapse/__init__.py", SYNAPSE_MODULE_SOURCE),
    ("mxstack_synapse/escrow.py", SYNAPSE_ESCROW_MODULE_SOURCE),
    ("mxstack_synapse/push.py", SYNAPSE_PUSH_MODULE_SOURCE),
];

/// Where `up` writes the Python modules Synapse imports (PYTHONPATH).
pub fn synapse_python_dir(layout: &StateLayout) -> PathBuf {
    layout.root.join("python")
}

impl LocalPlan {
    pub fn build(
        config: &Config,
        secrets: &Secrets,
        layout: &StateLayout,
        shape: &Shape,
        programs: &Programs,
    ) -> LocalPlan {
        let (t, addr) = local_topology(config, layout, shape);
        let paths = addr.synapse_paths();
        let redis_password = secrets.get(SecretName::RedisPassword).to_string();
        let c = Parts {
            config,
            secrets,
            layout,
            programs,
            t: &t,
            addr: &addr,
            paths,
            redis_password: &redis_password,
        };
        let mut out = Out::default();
        synapse_config(&c, &mut out);
        haproxy_config(&c, &mut out);
        valkey(&c, &mut out);
        seaweedfs(&c, &mut out);
        let pgpass = postgres(&c, &mut out);
        let mut router_after = synapse(&c, &mut out);
        if t.has(Feature::Antivirus) {
            antivirus(&c, &mut out);
            router_after.push("content-scanner".into());
        }
        if t.has(Feature::Calls) {
            crate::coturn::part(&c, &mut out);
            crate::rtc_auth::part(&c, &mut out);
        }
        if t.has(Feature::Li) {
            li_services(
                &t,
                &addr,
                layout,
                programs,
                secrets,
                &mut out.files,
                &mut out.services,
            );
        }
        let router_port = router(&c, &mut out, router_after);
        if t.has(Feature::Monitoring) {
            crate::monitoring::part(&c, &mut out);
        }
        let pg = addr.postgres();
        let Out { files, services } = out;
        LocalPlan {
            client_url: format!("http://127.0.0.1:{router_port}"),
            postgres_dsn: format!(
                "postgresql://{DATABASE_USER}@{}:{}/{DATABASE_NAME}?passfile={}",
                pg.host,
                pg.port,
                pgpass.display()
            ),
            s3_endpoint: addr.s3_endpoint(),
            bucket: config.media.bucket.clone(),
            redis_password,
            redis_password_previous: secrets
                .previous(SecretName::RedisPassword)
                .map(str::to_owned),
            topology: t,
            addressing: addr,
            services,
            files,
        }
    }

    /// The services that read `value` (a secret's value): through their environment or stdin,
    /// or through a generated file their arguments name, directly or by a path another such
    /// file names (homeserver.yaml names the macaroon key's file). What is really handed to a
    /// process, so a rotation restarts exactly those.
    pub fn readers_of(&self, value: &str) -> Vec<&Service> {
        let mut holding: Vec<String> = self
            .files
            .iter()
            .filter(|f| !f.per_use && f.content.contains(value))
            .map(|f| f.path.display().to_string())
            .collect();
        loop {
            let more: Vec<String> = self
                .files
                .iter()
                .map(|f| f.path.display().to_string())
                .filter(|p| !holding.contains(p))
                .filter(|p| {
                    let f = self
                        .files
                        .iter()
                        .find(|f| f.path.display().to_string() == *p);
                    f.is_some_and(|f| holding.iter().any(|h| f.content.contains(h.as_str())))
                })
                .collect();
            if more.is_empty() {
                break;
            }
            holding.extend(more);
        }
        self.start_order()
            .into_iter()
            .filter(|s| {
                s.env.iter().any(|(_, v)| v.contains(value))
                    || s.stdin.as_ref().is_some_and(|i| i.contains(value))
                    || s.args
                        .iter()
                        .any(|a| holding.iter().any(|h| a.contains(h.as_str())))
            })
            .collect()
    }

    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }

    /// Start order: each service after everything it waits for (stable for equal rank).
    pub fn start_order(&self) -> Vec<&Service> {
        let mut rank: BTreeMap<&str, usize> = BTreeMap::new();
        fn depth<'a>(
            plan: &'a LocalPlan,
            name: &'a str,
            rank: &mut BTreeMap<&'a str, usize>,
        ) -> usize {
            if let Some(r) = rank.get(name) {
                return *r;
            }
            let s = plan.service(name).expect("dependency exists");
            let d = s
                .after
                .iter()
                .map(|a| depth(plan, a, rank) + 1)
                .max()
                .unwrap_or(0);
            rank.insert(name, d);
            d
        }
        let mut order: Vec<&Service> = self.services.iter().collect();
        for s in &self.services {
            depth(self, &s.name, &mut rank);
        }
        order.sort_by_key(|s| rank[s.name.as_str()]);
        order
    }
}

/// The supervisor waits for a component's declared ready endpoint (the registry's, as the
/// Kubernetes readiness probe).
fn ready_http(c: &reg::Component, port: u16) -> Readiness {
    Readiness::Http {
        port,
        path: c
            .health
            .expect("the component declares its health endpoint")
            .ready
            .into(),
    }
}

/// Synapse's config and secret files: the same files the Kubernetes ConfigMaps and Secrets hold.
fn synapse_config(c: &Parts, out: &mut Out) {
    let Parts {
        t,
        addr,
        paths,
        secrets,
        redis_password,
        ..
    } = c;
    let processes = t.processes();
    // --- Synapse: the same files the Kubernetes ConfigMaps and Secrets hold.
    out.files.push(file(
        paths.homeserver_yaml(),
        synapse::to_yaml(&synapse::homeserver_yaml(t, *addr)),
        0o644,
    ));
    out.files.push(file(
        paths.log_yaml(),
        synapse::to_yaml(&synapse::log_yaml()),
        0o644,
    ));
    for p in processes.iter().filter(|p| !p.is_main()) {
        out.files.push(file(
            paths.worker_yaml(&p.name),
            synapse::to_yaml(&synapse::worker_yaml(t, p, *addr)),
            0o644,
        ));
    }
    for (name, secret) in SYNAPSE_SECRET_FILES {
        out.files
            .push(file(paths.secret(name), secrets.get(secret), 0o600));
    }
    out.files.push(file(
        paths.redis_password_file.clone(),
        redis_password.to_string(),
        0o600,
    ));
    if t.has(Feature::Calls) {
        out.files.push(file(
            paths.turn_secret_file.clone(),
            secrets.get(SecretName::TurnSharedSecret),
            0o600,
        ));
    }
    if t.has(Feature::Li) {
        // The escrow module's store API key for the key vault (main reads it per request).
        out.files.push(
            file(
                paths.key_vault_store_api_key_file.clone(),
                secrets.get(SecretName::KeyVaultStoreApiKey),
                0o600,
            )
            .read_per_use(),
        );
    }
}

/// HAProxy: the router and the Valkey master endpoint, with literal addresses instead of DNS.
fn haproxy_config(c: &Parts, out: &mut Out) {
    let Parts {
        t, addr, layout, ..
    } = c;
    // --- HAProxy: router and Valkey master endpoint, literal addresses instead of DNS.
    let hdir = layout.haproxy_dir();
    let router = haproxy::router(t, *addr, Resolution::Static, &hdir.display().to_string());
    for (name, content) in router.files() {
        out.files
            .push(file(hdir.join(name), content.to_string(), 0o644));
    }
    out.files.push(file(
        hdir.join("valkey-master.cfg"),
        haproxy::redis_master(t, *addr, Resolution::Static),
        0o644,
    ));
}

/// Valkey/Redis: instance 0 starts as master, the others follow it; Sentinel watches; HAProxy
/// gives Synapse the one master endpoint.
fn valkey(c: &Parts, out: &mut Out) {
    let Parts {
        t,
        addr,
        layout,
        programs,
        redis_password,
        ..
    } = c;
    let hdir = layout.haproxy_dir();
    // --- Valkey/Redis: instance 0 starts as master, the others follow it; Sentinel watches.
    let n = t.sizing.redis.instances;
    let master = addr.redis_instance(0);
    for i in 0..n {
        let me = addr.redis_instance(i);
        let dir = layout.valkey_dir(i);
        // The same settings as Kubernetes; memory capped for one machine.
        let mut conf = format!(
            "port {}\nbind 127.0.0.1\nprotected-mode yes\ndir {}\ndaemonize no\nrequirepass \"{pw}\"\nmasterauth \"{pw}\"\n{}",
            me.port,
            dir.display(),
            mxstack_topology::valkey::server_settings(t.sizing.redis.maxmemory_mib.min(512)),
            pw = redis_password
        );
        if i > 0 {
            conf.push_str(&format!("replicaof {} {}\n", master.host, master.port));
        }
        out.files.push(file(dir.join("valkey.conf"), conf, 0o600));
        let s = addr.sentinel(i);
        let sentinel = format!(
            "port {}\nbind 127.0.0.1\ndaemonize no\ndir {}\nsentinel monitor {name} {} {} {}\nsentinel auth-pass {name} \"{}\"\n{}",
            s.port,
            dir.display(),
            master.host,
            master.port,
            t.sizing.redis.sentinel_quorum,
            redis_password,
            mxstack_topology::valkey::sentinel_settings(),
            name = mxstack_topology::valkey::SENTINEL_MASTER_NAME,
        );
        out.files
            .push(file(dir.join("sentinel.conf"), sentinel, 0o600));
    }

    for i in 0..n {
        let me = addr.redis_instance(i);
        out.services.push(
            Service::process(
                format!("valkey-{i}"),
                programs.redis_server.clone(),
                vec![layout
                    .valkey_dir(i)
                    .join("valkey.conf")
                    .display()
                    .to_string()],
                Readiness::Redis { port: me.port },
            )
            .after(if i == 0 {
                vec![]
            } else {
                vec!["valkey-0".into()]
            })
            .shown_port(me.port),
        );
    }
    for i in 0..n {
        let s = addr.sentinel(i);
        out.services.push(
            Service::process(
                format!("sentinel-{i}"),
                programs.redis_server.clone(),
                vec![
                    layout
                        .valkey_dir(i)
                        .join("sentinel.conf")
                        .display()
                        .to_string(),
                    "--sentinel".into(),
                ],
                Readiness::Tcp { port: s.port },
            )
            .after((0..n).map(|j| format!("valkey-{j}")).collect())
            .shown_port(s.port),
        );
    }
    let rm = addr.redis_master();
    out.services.push(
        Service::process(
            "valkey-master".into(),
            programs.haproxy.clone(),
            vec![
                "-db".into(),
                "-f".into(),
                hdir.join("valkey-master.cfg").display().to_string(),
            ],
            Readiness::Redis { port: rm.port },
        )
        .after((0..n).map(|j| format!("valkey-{j}")).collect())
        .env(
            vec![("REDIS_PASSWORD".into(), redis_password.to_string())],
            vec!["REDIS_PASSWORD".into()],
        )
        .shown_port(rm.port),
    );
}

/// SeaweedFS: the S3 identities (the one set of S3 credentials, as in Kubernetes, and LI's),
/// the server, and its buckets.
fn seaweedfs(c: &Parts, out: &mut Out) {
    let Parts {
        t,
        addr,
        layout,
        programs,
        secrets,
        config,
        ..
    } = c;
    // --- SeaweedFS S3 identity (the one set of S3 credentials, as in Kubernetes).
    // With feature li, main's identity reaches its own buckets only (topology::backup). Each
    // identity lists the credentials SeaweedFS accepts (two while a rotation switches).
    let creds = |key, secret| mxstack_topology::seaweedfs::credentials(secrets, key, secret);
    let mut identities = vec![serde_json::json!({
        "name": mxstack_topology::backup::MAIN_IDENTITY,
        "credentials": creds(SecretName::S3AccessKey, SecretName::S3SecretKey),
        "actions": mxstack_topology::backup::main_identity_actions(config)
    })];
    if t.has(Feature::Li) {
        identities.extend(li_s3_identities(config, secrets));
    }
    let s3_config = serde_json::json!({ "identities": identities });
    out.files.push(file(
        layout.seaweedfs_dir().join("s3.json"),
        s3_config.to_string(),
        0o600,
    ));

    let (m_port, v_port, f_port) = addr.seaweedfs_ports();
    let [m_grpc, v_grpc, f_grpc, s3_grpc] = addr.seaweedfs_grpc_ports();
    let s3_port: u16 = addr
        .s3_endpoint()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("s3 port");
    let sw = layout.seaweedfs_dir();
    out.services.push(
        // Small volumes: a test stack needs many collections, not large files.
        // The embedded IAM API needs an STS signing key; static identities are all we use.
        // SeaweedFS 4.x also opens Iceberg (8181) and Lance (9101) listeners on fixed
        // ports: off, so two stacks (or a stack and the tests) never collide.
        Service::process(
            "seaweedfs".into(),
            programs.weed.clone(),
            vec![
                "server".into(),
                format!("-dir={}", sw.join("data").display()),
                "-ip=127.0.0.1".into(),
                "-ip.bind=127.0.0.1".into(),
                format!("-master.port={m_port}"),
                format!("-master.port.grpc={m_grpc}"),
                format!("-volume.port={v_port}"),
                format!("-volume.port.grpc={v_grpc}"),
                "-volume.max=100".into(),
                "-master.volumeSizeLimitMB=128".into(),
                "-filer".into(),
                format!("-filer.port={f_port}"),
                format!("-filer.port.grpc={f_grpc}"),
                "-s3".into(),
                format!("-s3.port={s3_port}"),
                format!("-s3.port.grpc={s3_grpc}"),
                format!("-s3.config={}", sw.join("s3.json").display()),
                "-s3.iam=false".into(),
                "-s3.port.iceberg=0".into(),
                "-s3.port.lance=0".into(),
                format!(
                    "-metricsPort={}",
                    addr.port_of(
                        mxstack_topology::party::Party::Seaweedfs,
                        reg::seaweedfs::METRICS.name,
                        0
                    )
                    .expect("allocated")
                ),
            ],
            Readiness::Tcp { port: s3_port },
        )
        .shown_port(s3_port)
        .grace(5),
    );
    // Idempotent: list the buckets, create only the missing ones (`weed shell` fails on "exists").
    let weed_shell = format!(
        "'{}' shell -master=127.0.0.1:{m_port}.{m_grpc} -filer=127.0.0.1:{f_port}.{f_grpc}",
        programs.weed.display()
    );
    let script = format!(
        "set -e\nlist=$(printf 's3.bucket.list\\nexit\\n' | {weed_shell})\nfor b in {}; do\n  echo \"$list\" | grep -qw \"$b\" || printf 's3.bucket.create -name %s\\nexit\\n' \"$b\" | {weed_shell}\ndone\n",
        config.buckets().join(" ")
    );
    // Versioning on the media buckets, as in Kubernetes (idempotent).
    let script = config.versioned_buckets().iter().fold(script, |s, b| {
        format!(
            "{s}printf 's3.bucket.versioning -name %s -enable\\nexit\\n' '{b}' | {weed_shell}\n"
        )
    });
    out.services.push(
        Service::task(
            "seaweedfs-buckets".into(),
            "/bin/sh".into(),
            vec!["-c".into(), script],
        )
        .after(vec!["seaweedfs".into()]),
    );
}

/// The LI data path's SeaweedFS identities (as `k8s::secrets` renders them): li-sync, Synapse LI
/// and the LI backups' archiver.
fn li_s3_identities(config: &Config, secrets: &Secrets) -> Vec<serde_json::Value> {
    let creds = |key, secret| mxstack_topology::seaweedfs::credentials(secrets, key, secret);
    let li_bucket = config.li.media_bucket(&config.media);
    let main_bucket = &config.media.bucket;
    vec![
        // li-sync reads main's bucket and writes the LI bucket; it can delete nothing.
        serde_json::json!({
            "name": "li-sync",
            "credentials": creds(SecretName::LiS3AccessKey, SecretName::LiS3SecretKey),
            "actions": [
                format!("Read:{main_bucket}"), format!("List:{main_bucket}"),
                format!("Read:{li_bucket}"), format!("List:{li_bucket}"), format!("Write:{li_bucket}")
            ]
        }),
        // Synapse LI reads the LI bucket, nothing else.
        serde_json::json!({
            "name": "synapse-li",
            "credentials": creds(SecretName::LiBrowsingS3AccessKey, SecretName::LiBrowsingS3SecretKey),
            "actions": [format!("Read:{li_bucket}"), format!("List:{li_bucket}")]
        }),
        // The LI PostgreSQL's archiver writes the LI backup bucket, nothing else.
        serde_json::json!({
            "name": mxstack_topology::backup::LI_BACKUP_IDENTITY,
            "credentials": creds(SecretName::LiBackupS3AccessKey, SecretName::LiBackupS3SecretKey),
            "actions": mxstack_topology::backup::li_backup_identity_actions(config)
        }),
    ]
}

/// PostgreSQL: a cluster of our own under the state directory. Returns Synapse's passfile.
fn postgres(c: &Parts, out: &mut Out) -> PathBuf {
    let Parts {
        t,
        addr,
        layout,
        programs,
        secrets,
        config,
        ..
    } = c;
    // --- PostgreSQL: a cluster of our own under the state directory.
    let pg = addr.postgres();
    let archive = backup::Cluster::Main.archive(config, addr, &programs.barman_bin);
    let pgpass = layout.root.join("pgpass");
    out.files.push(file(
        pgpass.clone(),
        format!(
            "{}:{}:{DATABASE_NAME}:{DATABASE_USER}:{}\n",
            pg.host,
            pg.port,
            secrets.get(SecretName::SynapseDbPassword)
        ),
        0o600,
    ));

    // barman-cloud (boto3) reads the S3 credentials from this file at each WAL archived: a
    // rotation rewrites it and PostgreSQL, which keeps running, archives with the new key.
    let s3_credentials_file = layout.root.join("postgres/s3-credentials");
    out.files.push(
        file(
            s3_credentials_file.clone(),
            backup::credentials_file(backup::Cluster::Main, secrets),
            0o600,
        )
        .owned_by("postgres")
        .read_per_use(),
    );
    let pg_data = layout.postgres_data();
    let pwfile = layout.root.join("postgres/initdb-password");
    out.services
        .push(initdb("postgres-init", programs, &pg_data, &pwfile));
    // The superuser gets a random password nobody needs: local access is by peer auth only.
    out.files.push(file(
        pwfile,
        secrets
            .get(SecretName::LiReplicationPassword)
            .chars()
            .rev()
            .collect::<String>(),
        0o600,
    ));
    out.services.push(
        postgres_server(
            "postgres",
            programs,
            layout,
            &pg_data,
            pg.port,
            &[
                "listen_addresses=127.0.0.1".into(),
                format!("max_connections={}", t.budget.max_connections),
                "wal_level=logical".into(),
                "shared_buffers=256MB".into(),
                "synchronous_commit=on".into(),
                // Continuous archiving to the backup bucket, as CloudNativePG's Barman Cloud plugin
                // does (docs/BACKUP.md); the credentials are in the environment, never here.
                // Barman lists backup times in the server's zone without naming it: UTC.
                "timezone=UTC".into(),
                "archive_mode=on".into(),
                format!("archive_command={}", archive.archive_command()),
                format!("archive_timeout={}", backup::ARCHIVE_TIMEOUT_SECS),
            ],
            "postgres-init",
        )
        .env(
            backup::credentials_file_env(config, &s3_credentials_file),
            vec![],
        ),
    );
    out.services.push(psql_as_postgres(
        "postgres-setup",
        programs,
        layout,
        pg.port,
        "postgres",
        role_and_database_sql(
            DATABASE_USER,
            "LOGIN",
            secrets.get(SecretName::SynapseDbPassword),
            DATABASE_NAME,
        ),
        "postgres",
    ));

    pgpass
}

/// Synapse: main, then every worker, each with the same environment as its pod. Returns their
/// names (the router waits for them).
fn synapse(c: &Parts, out: &mut Out) -> Vec<String> {
    let Parts {
        t,
        addr,
        layout,
        programs,
        secrets,
        ..
    } = c;
    let processes = t.processes();
    // --- Synapse: main, then every worker, each with the same env as its pod.
    let synapse_env = secret_env(
        secrets,
        &[
            ("PGPASSWORD", SecretName::SynapseDbPassword),
            ("AWS_ACCESS_KEY_ID", SecretName::S3AccessKey),
            ("AWS_SECRET_ACCESS_KEY", SecretName::S3SecretKey),
        ],
    );
    let synapse_secret_env: Vec<String> = synapse_env.iter().map(|(k, _)| k.clone()).collect();
    let mut synapse_env = synapse_env;
    if t.has(Feature::Antivirus) || t.has(Feature::Li) || t.has(Feature::Push) {
        // The upload, escrow and push modules; in Kubernetes they are baked into the Synapse image.
        synapse_env.push((
            "PYTHONPATH".into(),
            synapse_python_dir(layout).display().to_string(),
        ));
        for (rel, source) in SYNAPSE_MODULE_FILES {
            out.files
                .push(file(synapse_python_dir(layout).join(rel), source, 0o644));
        }
    }
    let mut synapse_names = Vec::new();
    for p in &processes {
        let (module, mut args) = if p.is_main() {
            ("synapse.app.homeserver", vec![])
        } else {
            ("synapse.app.generic_worker", vec![])
        };
        for c in synapse::config_paths(t, p, *addr) {
            args.push("--config-path".into());
            args.push(c.display().to_string());
        }
        let mut full = vec!["-m".to_string(), module.to_string()];
        full.extend(args);
        let serves_http = p.kind.map(WorkerKind::serves_http).unwrap_or(true);
        let readiness = if serves_http {
            ready_http(&reg::synapse::COMPONENT, addr.http(p).port)
        } else {
            Readiness::Tcp {
                port: addr.metrics(p).port,
            }
        };
        let after = if p.is_main() {
            let mut after = vec![
                "postgres-setup".to_string(),
                "valkey-master".into(),
                "seaweedfs-buckets".into(),
            ];
            if t.has(Feature::Li) {
                // The event trigger must exist before Synapse creates its tables.
                after.push("li-prepare-main".into());
            }
            after
        } else {
            vec!["synapse-main".into()]
        };
        out.services.push(
            Service::process(p.name.clone(), programs.python.clone(), full, readiness)
                .after(after)
                .env(synapse_env.clone(), synapse_secret_env.clone())
                .shown_port(if serves_http {
                    addr.http(p).port
                } else {
                    addr.metrics(p).port
                }),
        );
        synapse_names.push(p.name.clone());
    }
    synapse_names
}

/// Antivirus: clamd with a generated signature set, and the content scanner between the router
/// and the media workers (the same config the Kubernetes pods get).
fn antivirus(c: &Parts, out: &mut Out) {
    let Parts {
        t,
        addr,
        layout,
        programs,
        secrets,
        ..
    } = c;
    let av = layout.root.join("clamav");
    let db = av.join("db");
    out.files.push(file(
        db.join(antivirus::TEST_SIGNATURE_FILE),
        antivirus::EICAR_TEST_SIGNATURE,
        0o644,
    ));
    let clamd_addr = addr.clamd();
    out.files.push(file(
        av.join("clamd.conf"),
        antivirus::clamd_conf(
            t,
            &clamd_addr.host,
            clamd_addr.port,
            &db.display().to_string(),
        ),
        0o644,
    ));
    // Official signatures, when this machine has them (freshclam), are used as well.
    let official = Path::new("/var/lib/clamav");
    let links = [
        "main.cvd",
        "main.cld",
        "daily.cvd",
        "daily.cld",
        "bytecode.cvd",
        "bytecode.cld",
    ]
    .iter()
    .filter(|f| official.join(f).exists())
    .map(|f| {
        format!(
            "ln -sf '{}' '{}'",
            official.join(f).display(),
            db.join(f).display()
        )
    })
    .collect::<Vec<_>>()
    .join("\n");
    out.services.push(
        Service::task(
            "clamd-signatures".into(),
            "/bin/sh".into(),
            vec!["-c".into(), format!("set -e\n{links}\ntrue\n")],
        )
        .grace(5),
    );
    out.services.push(
        Service::process(
            "clamd".into(),
            programs
                .clamd
                .clone()
                .unwrap_or_else(|| PathBuf::from("clamd")),
            vec![
                "--foreground".into(),
                format!("--config-file={}", av.join("clamd.conf").display()),
            ],
            Readiness::Tcp {
                port: clamd_addr.port,
            },
        )
        .after(vec!["clamd-signatures".into()])
        .shown_port(clamd_addr.port)
        .grace(10),
    );
    let scanner_dir = layout.root.join("content-scanner");
    let secret_path = scanner_dir.join(antivirus::REQUEST_SECRET_FILE);
    out.files.push(file(
        secret_path.clone(),
        secrets.get(SecretName::ContentScannerRequestSecret),
        0o600,
    ));
    let listen = addr.content_scanner();
    out.files.push(file(
        scanner_dir.join("scanner.yaml"),
        synapse::to_yaml(&antivirus::scanner_config(
            t,
            *addr,
            &listen.to_string(),
            &secret_path.display().to_string(),
        )),
        0o644,
    ));
    out.services.push(
        Service::process(
            "content-scanner".into(),
            programs.mxstack.clone(),
            vec![
                "serve".into(),
                "content-scanner".into(),
                "--config".into(),
                scanner_dir.join("scanner.yaml").display().to_string(),
                "--threads".into(),
                antivirus::scanner_threads(t).to_string(),
            ],
            ready_http(&reg::content_scanner::COMPONENT, listen.port),
        )
        .after(vec!["clamd".into()])
        .shown_port(listen.port)
        .grace(10),
    );
}

/// The router: HAProxy in front of everything, on the base port. Returns its port.
fn router(c: &Parts, out: &mut Out, after: Vec<String>) -> u16 {
    let Parts {
        addr,
        layout,
        programs,
        ..
    } = c;
    let hdir = layout.haproxy_dir();
    let router_port = addr.router().port;
    out.services.push(
        Service::process(
            "router".into(),
            programs.haproxy.clone(),
            // Master-worker: on SIGUSR2 the master starts a worker with the new files, which
            // takes the listening sockets over (`expose-fd listeners`), so no connection is
            // refused while `mxstack scale` adds a backend server.
            vec![
                "-W".into(),
                "-db".into(),
                "-f".into(),
                hdir.join(haproxy::CONFIG_FILE).display().to_string(),
            ],
            ready_http(&reg::router::COMPONENT, addr.router_stats().port),
        )
        .reloads_on(libc::SIGUSR2)
        .after(after)
        .shown_port(router_port),
    );

    router_port
}

/// The lawful-intercept data path on this machine: a second PostgreSQL cluster (the replica),
/// main prepared for logical replication, and li-sync (schema, subscription, history, media).
/// Locally no scheduler runs `mxstack li dump`: in dump mode li-sync runs one itself, at start
/// and then every minute (on Kubernetes, the CronJob on `li.dump_schedule`).
pub const LOCAL_DUMP_INTERVAL_SECS: u64 = 60;

fn local_li_sync_config(t: &Topology, addr: &LocalAddressing, listen: &str) -> serde_json::Value {
    let mut c = li::li_sync_config_typed(t, addr, listen);
    if t.config.li.sync == mxstack_spec::LiSyncMode::Dump {
        c.dump_interval_secs = Some(LOCAL_DUMP_INTERVAL_SECS);
    }
    serde_json::to_value(&c).expect("li-sync's config serializes")
}

fn li_services(
    t: &Topology,
    addr: &LocalAddressing,
    layout: &StateLayout,
    programs: &Programs,
    secrets: &Secrets,
    files: &mut Vec<GeneratedFile>,
    services: &mut Vec<Service>,
) {
    let pg = addr.postgres();
    let li_pg = addr.li_postgres();
    let data = layout.li_postgres_data();
    // Main: identities, event trigger, the read-only replication role, the publication. Before
    // Synapse starts, so every table Synapse creates gets its identity from the event trigger.
    services.push(psql_as_postgres(
        "li-prepare-main",
        programs,
        layout,
        pg.port,
        DATABASE_NAME,
        li::main_setup_sql(
            DATABASE_USER,
            Some(secrets.get(SecretName::LiReplicationPassword)),
        ),
        "postgres-setup",
    ));
    services.push(initdb(
        "postgres-li-init",
        programs,
        &data,
        &layout.root.join("postgres/initdb-password"),
    ));
    // As main's: read at each WAL archived, so a rotation of its keys restarts nothing.
    let credentials = layout.root.join("postgres/li-s3-credentials");
    files.push(
        file(
            credentials.clone(),
            backup::credentials_file(backup::Cluster::Li, secrets),
            0o600,
        )
        .owned_by("postgres")
        .read_per_use(),
    );
    services.push(li_postgres_server(t, addr, layout, programs, &credentials));
    // li-sync owns the LI cluster (CREATE SUBSCRIPTION needs a superuser on PostgreSQL 15).
    services.push(psql_as_postgres(
        "postgres-li-setup",
        programs,
        layout,
        li_pg.port,
        "postgres",
        role_and_database_sql(
            li::LI_ROLE,
            "LOGIN SUPERUSER",
            secrets.get(SecretName::LiDbPassword),
            li::LI_DATABASE,
        ) + &role_and_database_sql(
            // The browsing stack's working copy (`mxstack li refresh-working-copy`).
            mxstack_topology::li_browsing::WORKING_COPY_ROLE,
            "LOGIN",
            secrets.get(SecretName::LiWorkingCopyDbPassword),
            li::WORKING_COPY_DATABASE,
        ) + &li_console::console_role_sql(secrets.get(SecretName::LiConsoleDbPassword)),
        "postgres-li",
    ));
    let dir = layout.root.join("li-sync");
    let config_path = dir.join("li-sync.yaml");
    let listen = addr.li_sync();
    files.push(file(
        config_path.clone(),
        synapse::to_yaml(&local_li_sync_config(t, addr, &listen.to_string())),
        0o644,
    ));
    let env = secret_env(
        secrets,
        &[
            (li::ENV_MAIN_PASSWORD, SecretName::LiReplicationPassword),
            (li::ENV_LI_PASSWORD, SecretName::LiDbPassword),
            (li::ENV_S3_ACCESS_KEY, SecretName::LiS3AccessKey),
            (li::ENV_S3_SECRET_KEY, SecretName::LiS3SecretKey),
        ],
    );
    // After main exists (Synapse creates the schema the replica copies).
    let after = [
        "postgres-li-setup",
        "li-prepare-main",
        "synapse-main",
        "seaweedfs-buckets",
    ];
    services.push(serve_service(
        "li-sync",
        "li-sync",
        programs,
        &config_path,
        env,
        listen.port,
        &after,
    ));
    browsing_services(
        t,
        addr,
        layout,
        programs,
        secrets,
        &config_path,
        files,
        services,
    );
    services.push(key_vault_service(addr, layout, programs, secrets, files));
    services.push(li_console_service(
        t, addr, layout, programs, secrets, files,
    ));
}

/// The LI cluster's PostgreSQL, archiving continuously to the LI backup bucket with the LI
/// backup identity, which alone can write there (docs/BACKUP.md); the credentials are in a file
/// barman-cloud reads at each run, never in an argument.
fn li_postgres_server(
    t: &Topology,
    addr: &LocalAddressing,
    layout: &StateLayout,
    programs: &Programs,
    credentials: &Path,
) -> Service {
    let archive = backup::Cluster::Li.archive(&t.config, addr, &programs.barman_bin);
    postgres_server(
        "postgres-li",
        programs,
        layout,
        &layout.li_postgres_data(),
        addr.li_postgres().port,
        &[
            "listen_addresses=127.0.0.1".into(),
            "max_connections=50".into(),
            "shared_buffers=128MB".into(),
            // Quick retries after the replica was down or a table was missing.
            "wal_retrieve_retry_interval=1s".into(),
            "timezone=UTC".into(),
            "archive_mode=on".into(),
            format!("archive_command={}", archive.archive_command()),
            format!("archive_timeout={}", backup::ARCHIVE_TIMEOUT_SECS),
        ],
        "postgres-li-init",
    )
    .env(backup::credentials_file_env(&t.config, credentials), vec![])
}

/// The LI console (`mxstack serve li-console`): SQLite in the state directory, reads the replica
/// as `li_console`, retrieves escrowed keys from the key vault, LI media through the read-only
/// identity Synapse LI also uses, scanned by clamd when feature `antivirus` is on. Plain HTTP on
/// loopback, so the session cookie is not `Secure` here (it is on Kubernetes, behind TLS).
fn li_console_service(
    t: &Topology,
    addr: &LocalAddressing,
    layout: &StateLayout,
    programs: &Programs,
    secrets: &Secrets,
    files: &mut Vec<GeneratedFile>,
) -> Service {
    let dir = layout.root.join(reg::li_console::COMPONENT.name());
    let config_path = dir.join("li-console.yaml");
    let listen = addr.li_console();
    let pg = addr.li_postgres();
    let vault = addr.key_vault();
    let c = &t.config;
    let s3 = addr.s3_endpoint();
    let bucket = c.li.media_bucket(&c.media);
    files.push(file(
        config_path.clone(),
        synapse::to_yaml(&li_console::console_config(&li_console::ConsoleEndpoints {
            listen: &listen.to_string(),
            database: &dir
                .join(li_console::CONSOLE_SQLITE_FILE)
                .display()
                .to_string(),
            server_name: &c.domain,
            replica: (&pg.host, pg.port, li::LI_DATABASE),
            key_vault_url: &format!("http://{vault}"),
            media: (&s3, &bucket, &c.media.region),
            clamd: t.has(Feature::Antivirus).then(|| addr.clamd().to_string()),
            secure_cookies: false,
            metrics_listen: Some(&addr.li_console_metrics().to_string()),
        })),
        0o644,
    ));
    let env = secret_env(
        secrets,
        &[
            (li_console::ENV_DB_PASSWORD, SecretName::LiConsoleDbPassword),
            (
                escrow::ENV_RETRIEVAL_API_KEY,
                SecretName::KeyVaultRetrievalApiKey,
            ),
            (
                li_console::ENV_VAULT_IDENTITY,
                SecretName::KeyVaultAgeIdentity,
            ),
            (li_console::ENV_SIGNING_KEY, SecretName::LiConsoleSigningKey),
            (
                li_console::ENV_S3_ACCESS_KEY,
                SecretName::LiBrowsingS3AccessKey,
            ),
            (
                li_console::ENV_S3_SECRET_KEY,
                SecretName::LiBrowsingS3SecretKey,
            ),
        ],
    );
    serve_service(
        reg::li_console::COMPONENT.name(),
        "li-console",
        programs,
        &config_path,
        env,
        listen.port,
        &[
            "postgres-li-setup",
            "li-sync",
            reg::key_vault::COMPONENT.name(),
        ],
    )
}

/// The key vault (`mxstack serve key-vault`): SQLite in the state directory, the API keys in its
/// environment, escrowed keys encrypted to the recipient of secret `key_vault_age_identity`.
fn key_vault_service(
    addr: &LocalAddressing,
    layout: &StateLayout,
    programs: &Programs,
    secrets: &Secrets,
    files: &mut Vec<GeneratedFile>,
) -> Service {
    let dir = layout.root.join("key-vault");
    let config_path = dir.join("key-vault.yaml");
    let listen = addr.key_vault();
    // Secrets::load refused an identity that does not parse; an empty recipient (never expected)
    // makes the vault refuse to start with a message naming `recipients.vault`.
    let recipient = secrets.key_vault_recipient().unwrap_or_default();
    files.push(file(
        config_path.clone(),
        synapse::to_yaml(&escrow::key_vault_config(
            &listen.to_string(),
            &dir.join(escrow::VAULT_SQLITE_FILE).display().to_string(),
            &recipient,
            &secrets.li_console_public_key().unwrap_or_default(),
        )),
        0o644,
    ));
    let mut env = secret_env(
        secrets,
        &[
            (escrow::ENV_STORE_API_KEY, SecretName::KeyVaultStoreApiKey),
            (
                escrow::ENV_RETRIEVAL_API_KEY,
                SecretName::KeyVaultRetrievalApiKey,
            ),
        ],
    );
    // While a rotation replaces a key, the vault accepts the previous one as well.
    for (var, name) in [
        (escrow::ENV_STORE_API_KEY, SecretName::KeyVaultStoreApiKey),
        (
            escrow::ENV_RETRIEVAL_API_KEY,
            SecretName::KeyVaultRetrievalApiKey,
        ),
    ] {
        if let Some(v) = secrets.previous(name) {
            env.push((escrow::other_env(var), v.to_string()));
        }
    }
    serve_service(
        reg::key_vault::COMPONENT.name(),
        "key-vault",
        programs,
        &config_path,
        env,
        listen.port,
        &[],
    )
}

/// `(variable, secret)` pairs as a service's environment.
fn secret_env(secrets: &Secrets, pairs: &[(&str, SecretName)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(var, name)| (var.to_string(), secrets.get(*name).to_string()))
        .collect()
}

/// One of mxstack's own services, `mxstack serve <what> --config FILE`: every environment
/// variable is a secret (never shown by `status` or in logs), ready when `GET /health` on its
/// port answers.
pub(crate) fn serve_service(
    name: &str,
    what: &str,
    programs: &Programs,
    config_path: &Path,
    env: Vec<(String, String)>,
    port: u16,
    after: &[&str],
) -> Service {
    let secret_env = env.iter().map(|(k, _)| k.clone()).collect();
    Service::process(
        name.into(),
        programs.mxstack.clone(),
        vec![
            "serve".into(),
            what.into(),
            "--config".into(),
            config_path.display().to_string(),
        ],
        ready_http(
            reg::ALL
                .into_iter()
                .find(|c| c.name() == name)
                .expect("a service of ours is in the registry"),
            port,
        ),
    )
    .after(after.iter().map(|a| a.to_string()).collect())
    .env(env, secret_env)
    .shown_port(port)
    .grace(10)
}

/// Synapse LI's process name (`mxstack li refresh-working-copy` restarts it).
pub const SYNAPSE_LI: &str = "synapse-li";

/// The LI browsing stack's server: the working copy refreshed once from the replica, then
/// Synapse LI on it with the config Kubernetes renders (`li_browsing::homeserver_yaml`).
/// Refresh again with `mxstack li refresh-working-copy` and restart `synapse-li`.
#[allow(clippy::too_many_arguments)]
fn browsing_services(
    t: &Topology,
    addr: &LocalAddressing,
    layout: &StateLayout,
    programs: &Programs,
    secrets: &Secrets,
    li_sync_config: &Path,
    files: &mut Vec<GeneratedFile>,
    services: &mut Vec<Service>,
) {
    use mxstack_topology::li_browsing;
    let li_db_password = (
        li::ENV_LI_PASSWORD.to_string(),
        secrets.get(SecretName::LiDbPassword).to_string(),
    );
    services.push(
        Service::task(
            "li-working-copy".into(),
            programs.mxstack.clone(),
            vec![
                "li".into(),
                "refresh-working-copy".into(),
                "--li-sync-config".into(),
                li_sync_config.display().to_string(),
            ],
        )
        .after(vec!["li-sync".into()])
        .env(vec![li_db_password], vec![li::ENV_LI_PASSWORD.into()])
        .grace(10),
    );
    let root = layout.root.join("synapse-li");
    let paths = SynapsePaths::under(&root.display().to_string());
    let http = addr.synapse_li_http();
    files.push(file(
        paths.homeserver_yaml(),
        synapse::to_yaml(&li_browsing::homeserver_yaml(t, addr, http.port, &paths)),
        0o644,
    ));
    files.push(file(
        paths.log_yaml(),
        synapse::to_yaml(&li_browsing::log_yaml()),
        0o644,
    ));
    files.push(file(
        paths.secret(li_browsing::SIGNING_KEY_FILE),
        secrets.get(SecretName::SigningKey),
        0o600,
    ));
    let env = secret_env(
        secrets,
        &[
            ("PGPASSWORD", SecretName::LiWorkingCopyDbPassword),
            ("AWS_ACCESS_KEY_ID", SecretName::LiBrowsingS3AccessKey),
            ("AWS_SECRET_ACCESS_KEY", SecretName::LiBrowsingS3SecretKey),
        ],
    );
    let secret_env = env.iter().map(|(k, _)| k.clone()).collect();
    services.push(
        Service::process(
            SYNAPSE_LI.into(),
            programs.python.clone(),
            vec![
                "-m".into(),
                "synapse.app.homeserver".into(),
                "--config-path".into(),
                paths.homeserver_yaml().display().to_string(),
            ],
            ready_http(&reg::synapse_li::COMPONENT, http.port),
        )
        .after(vec!["li-working-copy".into()])
        .env(env, secret_env)
        .shown_port(http.port),
    );
}

/// `initdb` of a cluster owned by the `postgres` user, once (skipped when it exists).
fn initdb(name: &str, programs: &Programs, data: &Path, pwfile: &Path) -> Service {
    Service::task(
        name.into(),
        programs.pg_bin.join("initdb"),
        vec![
            "-D".into(),
            data.display().to_string(),
            "--username=postgres".into(),
            "--auth-local=peer".into(),
            "--auth-host=scram-sha-256".into(),
            "--encoding=UTF8".into(),
            "--locale=C".into(),
            format!("--pwfile={}", pwfile.display()),
        ],
    )
    .run_as("postgres")
    .skip_if_exists(data.join("PG_VERSION"))
}

/// A PostgreSQL server on `port` with its socket in the state directory; `settings` are
/// `name=value` pairs passed as `-c`.
fn postgres_server(
    name: &str,
    programs: &Programs,
    layout: &StateLayout,
    data: &Path,
    port: u16,
    settings: &[String],
    after: &str,
) -> Service {
    let mut args = vec![
        "-D".into(),
        data.display().to_string(),
        "-p".into(),
        port.to_string(),
        "-k".into(),
        layout.sockets().display().to_string(),
    ];
    for s in settings {
        args.push("-c".into());
        args.push(s.clone());
    }
    Service::process(
        name.into(),
        programs.pg_bin.join("postgres"),
        args,
        Readiness::Tcp { port },
    )
    .after(vec![after.into()])
    .shown_port(port)
    .run_as("postgres")
}

/// A one-shot `psql` as the `postgres` superuser over the local socket (peer authentication),
/// reading `sql` from stdin and stopping at the first error.
fn psql_as_postgres(
    name: &str,
    programs: &Programs,
    layout: &StateLayout,
    port: u16,
    db: &str,
    sql: String,
    after: &str,
) -> Service {
    Service::task(
        name.into(),
        programs.pg_bin.join("psql"),
        vec![
            "-X".into(),
            "-q".into(),
            "-v".into(),
            "ON_ERROR_STOP=1".into(),
            "-h".into(),
            layout.sockets().display().to_string(),
            "-p".into(),
            port.to_string(),
            "-U".into(),
            "postgres".into(),
            "-d".into(),
            db.into(),
        ],
    )
    .after(vec![after.into()])
    .stdin(sql)
    .run_as("postgres")
}

/// Idempotent: the role exists with `attributes` and its password is (re)set from
/// secrets.yaml on every start; the database it owns is created once.
fn role_and_database_sql(role: &str, attributes: &str, password: &str, db: &str) -> String {
    let alter = mxstack_topology::pgsql::with_secret(&format!(
        "ALTER ROLE {role} WITH {attributes} PASSWORD '{password}';"
    ));
    format!(
        "SELECT 'CREATE ROLE {role} {attributes}' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}')\\gexec\n\
         {alter}\
         SELECT 'CREATE DATABASE {db} OWNER {role} ENCODING ''UTF8'' LC_COLLATE ''C'' LC_CTYPE ''C'' TEMPLATE template0' \
         WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '{db}')\\gexec\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn li_runs_the_key_vault_with_its_keys_secret() {
        let config = Config::new("acme.test", mxstack_spec::Tier::T10k, [Feature::Li].into());
        let secrets = Secrets::generate_all().unwrap();
        let layout = StateLayout::for_config(Path::new("/srv/mx/mxstack.yaml"), None);
        let programs = Programs::at_debian_paths();
        let plan = LocalPlan::build(&config, &secrets, &layout, &Shape::new(20000, 0), &programs);
        let v = plan
            .service(reg::key_vault::COMPONENT.name())
            .expect("key-vault service");
        assert_eq!(v.args[..2], ["serve".to_string(), "key-vault".to_string()]);
        let port = plan.addressing.key_vault().port;
        assert_eq!(v.port, Some(port));
        assert!(
            matches!(&v.readiness, Readiness::Http { port: p, path } if *p == port && path == "/health")
        );
        let mut keys: Vec<_> = v.env.iter().map(|(k, _)| k.clone()).collect();
        keys.sort();
        let mut secret_env = v.secret_env.clone();
        secret_env.sort();
        assert_eq!(keys, secret_env);
        let env: BTreeMap<_, _> = v.env.iter().cloned().collect();
        assert_eq!(
            env[escrow::ENV_STORE_API_KEY],
            secrets.get(SecretName::KeyVaultStoreApiKey)
        );
        assert_eq!(
            env[escrow::ENV_RETRIEVAL_API_KEY],
            secrets.get(SecretName::KeyVaultRetrievalApiKey)
        );
        // The config file is the topology's, with the identity's public recipient and no secret.
        let cfg = plan
            .files
            .iter()
            .find(|f| f.path == Path::new(&v.args[3]))
            .expect("key-vault.yaml");
        let expected = escrow::key_vault_config(
            &format!("127.0.0.1:{port}"),
            &layout
                .root
                .join("key-vault")
                .join(escrow::VAULT_SQLITE_FILE)
                .display()
                .to_string(),
            &secrets.key_vault_recipient().unwrap(),
            &secrets.li_console_public_key().unwrap(),
        );
        assert_eq!(cfg.content, synapse::to_yaml(&expected));
        for (_, value) in secrets.values() {
            assert!(!cfg.content.contains(value));
        }
        // Without li: no vault.
        let config = Config::new("acme.test", mxstack_spec::Tier::T10k, [].into());
        let plan = LocalPlan::build(&config, &secrets, &layout, &Shape::new(20000, 0), &programs);
        assert!(plan.service(reg::key_vault::COMPONENT.name()).is_none());
    }

    #[test]
    fn li_runs_the_console_with_read_only_credentials_and_the_vault_identity() {
        let config = Config::new(
            "acme.test",
            mxstack_spec::Tier::T10k,
            [Feature::Li, Feature::Antivirus].into(),
        );
        let secrets = Secrets::generate_all().unwrap();
        let layout = StateLayout::for_config(Path::new("/srv/mx/mxstack.yaml"), None);
        let programs = Programs::at_debian_paths();
        let plan = LocalPlan::build(&config, &secrets, &layout, &Shape::new(20000, 0), &programs);
        let c = plan
            .service(reg::li_console::COMPONENT.name())
            .expect("li-console service");
        assert_eq!(c.args[..2], ["serve".to_string(), "li-console".to_string()]);
        let port = plan.addressing.li_console().port;
        assert_eq!(c.port, Some(port));
        assert_eq!(port, plan.addressing.key_vault().port + 1);
        assert!(
            c.after.contains(&"li-sync".to_string())
                && c.after
                    .contains(&reg::key_vault::COMPONENT.name().to_string())
        );
        let env: BTreeMap<_, _> = c.env.iter().cloned().collect();
        let mut secret_env = c.secret_env.clone();
        secret_env.sort();
        assert_eq!(env.keys().cloned().collect::<Vec<_>>(), secret_env);
        assert_eq!(
            env[li_console::ENV_VAULT_IDENTITY],
            secrets.get(SecretName::KeyVaultAgeIdentity)
        );
        assert_eq!(
            env[li_console::ENV_DB_PASSWORD],
            secrets.get(SecretName::LiConsoleDbPassword)
        );
        assert_eq!(
            env[li_console::ENV_S3_ACCESS_KEY],
            secrets.get(SecretName::LiBrowsingS3AccessKey)
        );
        // Only the console holds the vault identity.
        for s in &plan.services {
            if s.name != reg::li_console::COMPONENT.name() {
                assert!(
                    s.env
                        .iter()
                        .all(|(_, v)| v != secrets.get(SecretName::KeyVaultAgeIdentity)),
                    "{} holds the vault identity",
                    s.name
                );
            }
        }
        let cfg = plan
            .files
            .iter()
            .find(|f| f.path == Path::new(&c.args[3]))
            .expect("li-console.yaml");
        for (_, value) in secrets.values() {
            assert!(!cfg.content.contains(value));
        }
        assert!(cfg.content.contains("user: li_console"));
        assert!(cfg.content.contains(&format!(
            "clamd: 127.0.0.1:{}",
            plan.addressing.clamd().port
        )));
        // The LI cluster's setup creates the read-only role.
        let setup = plan
            .service("postgres-li-setup")
            .expect("postgres-li-setup");
        let sql = setup.stdin.clone().unwrap_or_default();
        assert!(
            sql.contains("GRANT pg_read_all_data TO li_console"),
            "{sql}"
        );
        let config = Config::new("acme.test", mxstack_spec::Tier::T10k, [].into());
        let plan = LocalPlan::build(&config, &secrets, &layout, &Shape::new(20000, 0), &programs);
        assert!(plan.service(reg::li_console::COMPONENT.name()).is_none());
    }
}
