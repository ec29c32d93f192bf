//! Media object storage: SeaweedFS (default), a legacy MinIO Tenant, or nothing (external S3).
//!
//! SeaweedFS runs as three StatefulSets: masters (Raft), volume servers (the data, on PVCs) and
//! filers with the S3 gateway built in (`weed filer -s3`), behind Service `seaweedfs-s3`, the
//! endpoint Synapse and the backups use. A Job creates the buckets.

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use mxstack_spec::{Component, MediaBackend};
use mxstack_topology::registry as reg;
use serde_json::{json, Value};

use crate::meta::*;
use crate::secrets::{MINIO_CONFIGURATION, SEAWEEDFS_S3_CONFIG, SEAWEEDFS_S3_CONFIG_KEY};
use crate::{Ctx, Out, Phase};

const FILE: &str = "media.yaml";
/// Label the MinIO operator puts on a Tenant's pods.
const MASTER_PORT: u16 = 9333;
const VOLUME_PORT: u16 = 8080;
const FILER_PORT: u16 = 8888;
/// SeaweedFS serves gRPC on every HTTP port + 10000.
const GRPC_OFFSET: u16 = 10000;
/// Three masters at every tier: they are tiny, and Raft needs three to survive losing one.
const MASTERS: u32 = 3;
/// Two filers (each with the S3 gateway): the S3 endpoint survives losing one.
const FILERS: u32 = 2;
/// Filer metadata (leveldb) per filer; metadata is small next to the media itself.
const FILER_METADATA_SIZE: &str = "20Gi";
/// Every object is stored twice, on two different volume servers ("001": one extra copy in the
/// same rack). Volume PVCs are sized for that.
const REPLICATION: &str = "001";
const COPIES: u64 = 2;
/// uid the SeaweedFS processes run as (the image has no fixed user; PVCs are group-owned by it).
const SEAWEEDFS_UID: i64 = 1000;

pub fn render(ctx: &Ctx, out: &mut Out) {
    match ctx.cfg.media.backend {
        MediaBackend::Seaweedfs => seaweedfs(ctx, out),
        MediaBackend::MinioLegacy => minio(ctx, out),
        // External S3: only the s3-credentials Secret (rendered with the other secrets).
        MediaBackend::S3 => {}
    }
}

pub fn selector(component: &str) -> Labels {
    map(&[
        (LABEL_NAME, reg::seaweedfs::COMPONENT.name()),
        (LABEL_COMPONENT, component),
    ])
}

fn svc_host(ctx: &Ctx, service: &str) -> String {
    format!("{service}.{}.svc.cluster.local", ctx.ns())
}

fn master_peers(ctx: &Ctx) -> String {
    (0..MASTERS)
        .map(|i| {
            format!(
                "seaweedfs-master-{i}.{}:{MASTER_PORT}",
                svc_host(ctx, "seaweedfs-master")
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Volume servers: as many as the sizing's storage nodes (at least 2 for the second copy).
fn volume_servers(ctx: &Ctx) -> u32 {
    ctx.t
        .sizing
        .nodes
        .iter()
        .find(|n| n.role == "storage")
        .map(|n| n.count)
        .unwrap_or(2)
        .max(2)
}

/// Per-server volume size: the configured size, or the tier's media storage times the copies,
/// spread over the servers.
fn volume_size(ctx: &Ctx) -> String {
    if let Some(s) = &ctx.cfg.media.volume_size {
        return s.clone();
    }
    let total = size_gib(&ctx.t.sizing.media_storage).unwrap_or(500);
    let servers = u64::from(volume_servers(ctx));
    gib_size((total * COPIES).div_ceil(servers))
}

fn weed_container(ctx: &Ctx, name: &str, args: Vec<String>, ports: &[(&str, u16)]) -> Container {
    let mut container_ports = Vec::new();
    for (n, p) in ports {
        container_ports.push(container_port(n, *p, "TCP"));
        container_ports.push(container_port(&format!("{n}-grpc"), p + GRPC_OFFSET, "TCP"));
    }
    let probe_port = ports[0].0;
    Container {
        command: Some(vec!["weed".into()]),
        args: Some(args),
        env: Some(vec![
            env_field("POD_NAME", "metadata.name"),
            env_field("NAMESPACE", "metadata.namespace"),
        ]),
        ports: Some(container_ports),
        resources: Some(resources(
            &ctx.t.sizing.resources_for(Component::Seaweedfs, ctx.cfg),
        )),
        readiness_probe: Some(tcp_probe(probe_port, 5, 3)),
        liveness_probe: Some(tcp_probe(probe_port, 10, 6)),
        ..container(name, &ctx.cfg.images.seaweedfs)
    }
}

fn pod(
    containers: Vec<Container>,
    volumes: Vec<k8s_openapi::api::core::v1::Volume>,
    sel: &Labels,
) -> PodSpec {
    PodSpec {
        containers,
        volumes: Some(volumes),
        security_context: Some(pod_security(SEAWEEDFS_UID)),
        affinity: Some(spread(sel)),
        automount_service_account_token: Some(false),
        ..Default::default()
    }
}

fn headless(
    ctx: &Ctx,
    name: &str,
    sel: &Labels,
    ports: &[(&str, u16)],
) -> k8s_openapi::api::core::v1::Service {
    let mut sp = Vec::new();
    for (n, p) in ports {
        sp.push(service_port(n, *p, "TCP"));
        sp.push(service_port(&format!("{n}-grpc"), p + GRPC_OFFSET, "TCP"));
    }
    service(ctx, name, reg::seaweedfs::COMPONENT.name(), sel, sp, true)
}

fn seaweedfs(ctx: &Ctx, out: &mut Out) {
    let ns = ctx.ns();
    let peers = master_peers(ctx);
    let pod_ip = |svc: &str| format!("-ip=$(POD_NAME).{svc}.$(NAMESPACE).svc.cluster.local");

    // Masters.
    let sel = selector("master");
    let ports = [("master", MASTER_PORT)];
    out.add(
        Phase::Infrastructure,
        FILE,
        headless(ctx, "seaweedfs-master", &sel, &ports),
    );
    let c = Container {
        volume_mounts: Some(vec![mount_rw("data", "/data"), mount_rw("tmp", "/tmp")]),
        ..weed_container(
            ctx,
            "master",
            vec![
                "master".into(),
                format!("-port={MASTER_PORT}"),
                "-mdir=/data".into(),
                pod_ip("seaweedfs-master"),
                "-ip.bind=0.0.0.0".into(),
                format!("-peers={peers}"),
                format!("-defaultReplication={REPLICATION}"),
            ],
            &ports,
        )
    };
    let w = Workload::new(
        "seaweedfs-master",
        reg::seaweedfs::COMPONENT.name(),
        MASTERS,
        sel.clone(),
        pod(vec![c], vec![volume_empty("tmp")], &sel),
    );
    out.add(
        Phase::Infrastructure,
        FILE,
        w.stateful_set(
            ctx,
            "seaweedfs-master",
            vec![pvc_template(ctx, "data", "10Gi")],
        ),
    );
    out.add(Phase::Infrastructure, FILE, w.pdb(ctx));

    // Volume servers.
    let sel = selector("volume");
    let ports = [("volume", VOLUME_PORT)];
    out.add(
        Phase::Infrastructure,
        FILE,
        headless(ctx, "seaweedfs-volume", &sel, &ports),
    );
    let c = Container {
        volume_mounts: Some(vec![mount_rw("data", "/data"), mount_rw("tmp", "/tmp")]),
        ..weed_container(
            ctx,
            "volume",
            vec![
                "volume".into(),
                format!("-port={VOLUME_PORT}"),
                "-dir=/data".into(),
                // 0: as many volumes as fit on the disk.
                "-max=0".into(),
                pod_ip("seaweedfs-volume"),
                "-ip.bind=0.0.0.0".into(),
                format!("-mserver={peers}"),
            ],
            &ports,
        )
    };
    let w = Workload::new(
        "seaweedfs-volume",
        reg::seaweedfs::COMPONENT.name(),
        volume_servers(ctx),
        sel.clone(),
        pod(vec![c], vec![volume_empty("tmp")], &sel),
    );
    out.add(
        Phase::Infrastructure,
        FILE,
        w.stateful_set(
            ctx,
            "seaweedfs-volume",
            vec![pvc_template(ctx, "data", &volume_size(ctx))],
        ),
    );
    out.add(Phase::Infrastructure, FILE, w.pdb(ctx));

    // Filers with the S3 gateway.
    let sel = selector("filer");
    let ports = [("filer", FILER_PORT)];
    out.add(
        Phase::Infrastructure,
        FILE,
        headless(ctx, "seaweedfs-filer", &sel, &ports),
    );
    out.add(
        Phase::Infrastructure,
        FILE,
        service(
            ctx,
            reg::seaweedfs::S3_SERVICE,
            reg::seaweedfs::COMPONENT.name(),
            &sel,
            vec![service_port("s3", reg::seaweedfs::S3.number, "TCP")],
            false,
        ),
    );
    let mut c = weed_container(
        ctx,
        "filer",
        vec![
            "filer".into(),
            format!("-port={FILER_PORT}"),
            pod_ip("seaweedfs-filer"),
            "-ip.bind=0.0.0.0".into(),
            format!("-master={peers}"),
            "-defaultStoreDir=/data".into(),
            "-s3".into(),
            format!("-s3.port={}", reg::seaweedfs::S3.number),
            format!("-s3.config=/etc/seaweedfs/{SEAWEEDFS_S3_CONFIG_KEY}"),
            format!("-metricsPort={}", reg::seaweedfs::METRICS.number),
        ],
        &ports,
    );
    let container_ports = c.ports.get_or_insert_with(Vec::new);
    container_ports.push(container_port("s3", reg::seaweedfs::S3.number, "TCP"));
    // Scraped by the PodMonitor (feature monitoring); only the filers have it.
    container_ports.push(container_port(
        reg::seaweedfs::METRICS.name,
        reg::seaweedfs::METRICS.number,
        "TCP",
    ));
    c.readiness_probe = Some(tcp_probe("s3", 5, 3));
    c.volume_mounts = Some(vec![
        mount_rw("data", "/data"),
        mount("s3-config", "/etc/seaweedfs"),
        mount_rw("tmp", "/tmp"),
    ]);
    let volumes = vec![
        volume_secret("s3-config", SEAWEEDFS_S3_CONFIG, &[]),
        volume_empty("tmp"),
    ];
    let w = Workload::new(
        "seaweedfs-filer",
        reg::seaweedfs::COMPONENT.name(),
        FILERS,
        sel.clone(),
        pod(vec![c], volumes, &sel),
    );
    out.add(
        Phase::Infrastructure,
        FILE,
        w.stateful_set(
            ctx,
            "seaweedfs-filer",
            vec![pvc_template(ctx, "data", FILER_METADATA_SIZE)],
        ),
    );
    out.add(Phase::Infrastructure, FILE, w.pdb(ctx));

    out.add(Phase::Infrastructure, FILE, bucket_job(ctx, &peers, ns));
}

/// The buckets to create: media, backups, and with feature li the LI media and backup buckets.
pub fn buckets(ctx: &Ctx) -> Vec<String> {
    ctx.cfg.buckets()
}

/// Creates the buckets once the cluster answers; safe to run again.
fn bucket_job(ctx: &Ctx, peers: &str, _ns: &str) -> Job {
    let buckets = buckets(ctx);
    let mut script = format!(
        "set -eu\nM='{peers}'\nuntil echo 's3.bucket.list' | weed shell -master=\"$M\" >/tmp/buckets 2>&1; do\n  echo 'waiting for SeaweedFS'; sleep 5\ndone\n"
    );
    for b in &buckets {
        script.push_str(&format!(
            // A whole name: `synapse-media` must not match `synapse-media-li`.
            "if grep -qE '(^|[[:space:]]){b}([[:space:]]|$)' /tmp/buckets; then echo 'bucket {b} exists'; else echo 's3.bucket.create -name {b}' | weed shell -master=\"$M\"; fi\n"
        ));
    }
    // Idempotent: enabling versioning twice is a no-op.
    for b in ctx.cfg.versioned_buckets() {
        script.push_str(&format!(
            "echo 's3.bucket.versioning -name {b} -enable' | weed shell -master=\"$M\"\n"
        ));
    }
    let sel = selector("bucket-setup");
    let c = Container {
        command: Some(vec!["sh".into(), "-c".into(), script]),
        env: Some(vec![env("HOME", "/tmp")]),
        volume_mounts: Some(vec![mount_rw("tmp", "/tmp")]),
        resources: Some(resources(&mxstack_topology::sizing::Resources {
            cpu_millis: 100,
            memory_mib: 128,
        })),
        ..container("create-buckets", &ctx.cfg.images.seaweedfs)
    };
    let mut pod_labels = labels(reg::seaweedfs::COMPONENT.name());
    pod_labels.extend(sel);
    Job {
        metadata: meta(ctx, "seaweedfs-buckets", reg::seaweedfs::COMPONENT.name()),
        spec: Some(JobSpec {
            backoff_limit: Some(20),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![c],
                    restart_policy: Some("OnFailure".into()),
                    volumes: Some(vec![volume_empty("tmp")]),
                    security_context: Some(pod_security(SEAWEEDFS_UID)),
                    automount_service_account_token: Some(false),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Legacy: MinIO's community edition is unmaintained (see FACTS). Kept for sites that already run
/// it. The operator itself creates Service `minio` (port 80 without TLS), which is the endpoint
/// Synapse and the backups use, so it is not rendered here.
fn minio(ctx: &Ctx, out: &mut Out) {
    let servers = volume_servers(ctx).max(4);
    let volumes_per_server = 2u64;
    let total = size_gib(&ctx.t.sizing.media_storage).unwrap_or(500);
    // Erasure coding EC:2 on 8+ drives stores roughly 1.33x the data; size for 2x to be safe.
    let per_volume = ctx.cfg.media.volume_size.clone().unwrap_or_else(|| {
        gib_size((total * COPIES).div_ceil(u64::from(servers) * volumes_per_server))
    });
    let mut claim_spec = json!({
        "accessModes": ["ReadWriteOnce"],
        "resources": { "requests": { "storage": per_volume } },
    });
    if let Some(class) = &ctx.cfg.storage_class {
        claim_spec["storageClassName"] = json!(class);
    }
    let mut metadata = meta_json(ctx, reg::minio::TENANT, "minio");
    metadata["annotations"] = json!({
        "mxstack.io/legacy": "MinIO community edition is unmaintained; migrate media to SeaweedFS"
    });
    let r = ctx.t.sizing.resources_for(Component::Seaweedfs, ctx.cfg);
    let tenant: Value = json!({
        "apiVersion": "minio.min.io/v2",
        "kind": "Tenant",
        "metadata": metadata,
        "spec": {
            "image": ctx.cfg.images.minio,
            "configuration": { "name": MINIO_CONFIGURATION },
            "requestAutoCert": false,
            "buckets": buckets(ctx).iter().map(|b| json!({ "name": b })).collect::<Vec<_>>(),
            "pools": [{
                "name": "pool-0",
                "servers": servers,
                "volumesPerServer": volumes_per_server,
                "volumeClaimTemplate": {
                    "metadata": { "name": "data" },
                    "spec": claim_spec,
                },
                "resources": {
                    "requests": { "cpu": r.cpu(), "memory": r.memory() },
                    "limits": { "memory": r.memory() },
                },
                "securityContext": {
                    "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000, "runAsNonRoot": true,
                },
                "containerSecurityContext": {
                    "runAsUser": 1000, "runAsGroup": 1000, "runAsNonRoot": true,
                    "allowPrivilegeEscalation": false,
                    "capabilities": { "drop": ["ALL"] },
                    "seccompProfile": { "type": "RuntimeDefault" },
                },
            }],
        }
    });
    out.add(Phase::Infrastructure, FILE, tenant);
}
