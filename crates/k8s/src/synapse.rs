//! Synapse: main and one StatefulSet per worker group, each with a headless Service so every
//! process has the stable DNS name the topology's addressing gives it (`<pod>.<service>.<ns>.svc`).
//!
//! Config comes from ConfigMaps built from the topology; secrets are files from Secrets or env vars
//! from secretKeyRefs. Kubernetes itself expands `$(POD_NAME)` in args, so a worker picks its own
//! file without any templating step (seed 004 issue 6.1).

use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HPAScalingPolicy, HPAScalingRules, HorizontalPodAutoscaler,
    HorizontalPodAutoscalerBehavior, HorizontalPodAutoscalerSpec, MetricSpec, MetricTarget,
    ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{Container, ContainerPort, PodSpec, Probe, Volume, VolumeMount};
use mxstack_spec::{Component, Feature};
use mxstack_topology::registry as reg;
use mxstack_topology::sizing::Resources;
use mxstack_topology::synapse::{homeserver_yaml, log_yaml, to_yaml, worker_yaml};
use mxstack_topology::workers::{WorkerGroup, MAIN_INSTANCE, MAIN_PROCESS};

use crate::meta::*;
use crate::secrets::*;
use crate::{Ctx, Out, Phase};

pub const CONFIG: &str = "synapse-config";
pub use mxstack_topology::registry::synapse::METRICS_SERVICE;
/// uid/gid of the synapse user in the Synapse image.
pub const SYNAPSE_UID: i64 = 991;
/// Autoscalers add workers above this CPU utilisation.
pub const HPA_CPU_PERCENT: i32 = 70;

pub fn workers_config_map(group: &WorkerGroup) -> String {
    format!("synapse-{}-workers", group.name)
}

/// Selector of one group's pods (`main` for the main process).
pub fn selector(group: &str) -> Labels {
    map(&[
        (LABEL_NAME, reg::synapse::COMPONENT.name()),
        (LABEL_GROUP, group),
    ])
}

/// One Synapse StatefulSet: the main process, or a worker group.
struct Process<'a> {
    /// StatefulSet / Service name.
    name: String,
    /// `main` or the group name.
    group: String,
    worker: Option<&'a WorkerGroup>,
    replicas: u32,
    resources: Resources,
    serves_http: bool,
    replication_listener: bool,
}

pub fn render(ctx: &Ctx, out: &mut Out) {
    let file = "synapse-config.yaml";
    let hs = to_yaml(&homeserver_yaml(ctx.t, &ctx.addr));
    let log = to_yaml(&log_yaml());
    let shared_hash = config_hash(&[&hs, &log]);
    out.add(
        Phase::Main,
        file,
        config_map(
            ctx,
            CONFIG,
            reg::synapse::COMPONENT.name(),
            map(&[("homeserver.yaml", &hs), ("log.yaml", &log)]),
        ),
    );
    let processes = ctx.t.processes();
    let main = Process {
        name: MAIN_PROCESS.to_string(),
        group: MAIN_INSTANCE.to_string(),
        worker: None,
        replicas: 1,
        resources: ctx.t.sizing.resources_for(Component::SynapseMain, ctx.cfg),
        serves_http: true,
        replication_listener: true,
    };
    statefulset(ctx, out, &main, shared_hash.clone());
    for g in &ctx.t.groups {
        // One file per process that can exist (autoscaler maxima included).
        let files: Labels = processes
            .iter()
            .filter(|p| p.group == g.name)
            .map(|p| {
                (
                    format!("{}.yaml", p.name),
                    to_yaml(&worker_yaml(ctx.t, p, &ctx.addr)),
                )
            })
            .collect();
        let hash = config_hash(
            &std::iter::once(shared_hash.as_str())
                .chain(files.values().map(String::as_str))
                .collect::<Vec<_>>(),
        );
        out.add(
            Phase::Main,
            file,
            config_map(
                ctx,
                &workers_config_map(g),
                reg::synapse::COMPONENT.name(),
                files,
            ),
        );
        let p = Process {
            name: g.object_name(),
            group: g.name.clone(),
            worker: Some(g),
            replicas: g.replicas,
            resources: g.resources.clone(),
            serves_http: g.kind.serves_http(),
            replication_listener: g.kind.needs_replication_listener(),
        };
        statefulset(ctx, out, &p, hash);
    }
    if ctx.has(Feature::Monitoring) {
        out.add(Phase::Main, "synapse-main.yaml", metrics_service(ctx));
    }
}

fn metrics_service(ctx: &Ctx) -> k8s_openapi::api::core::v1::Service {
    let mut svc = service(
        ctx,
        METRICS_SERVICE,
        reg::synapse::COMPONENT.name(),
        &map(&[(LABEL_NAME, reg::synapse::COMPONENT.name())]),
        vec![service_port_of(reg::synapse::METRICS)],
        true,
    );
    label_for_scraping(&mut svc, reg::synapse::COMPONENT.name());
    svc
}

fn volumes_and_mounts(ctx: &Ctx, p: &Process) -> (Vec<Volume>, Vec<VolumeMount>) {
    let paths = &ctx.paths;
    let s = |p: &std::path::Path| p.display().to_string();
    let parent = |p: &std::path::Path| {
        p.parent()
            .expect("file has a directory")
            .display()
            .to_string()
    };
    let mut volumes = vec![
        volume_config_map("config", CONFIG),
        volume_secret("synapse-secrets", SYNAPSE_SECRETS, &[]),
        volume_secret("redis", VALKEY_AUTH, &[(VALKEY_PASSWORD_KEY, "password")]),
        // Local media store: Synapse writes uploads here before the S3 provider copies them.
        volume_empty("media"),
        volume_empty("tmp"),
    ];
    let mut mounts = vec![
        mount("config", &s(&paths.config_dir)),
        mount("synapse-secrets", &s(&paths.synapse_secrets_dir)),
        mount("redis", &parent(&paths.redis_password_file)),
        mount_rw("media", &s(&paths.media_store)),
        mount_rw("tmp", "/tmp"),
    ];
    if let Some(g) = p.worker {
        volumes.push(volume_config_map("workers", &workers_config_map(g)));
        mounts.push(mount("workers", &s(&paths.worker_config_dir)));
    }
    if ctx.has(Feature::Calls) {
        volumes.push(volume_secret(
            "turn",
            TURN_AUTH,
            &[(TURN_SECRET_KEY, "shared_secret")],
        ));
        mounts.push(mount("turn", &parent(&paths.turn_secret_file)));
    }
    if ctx.has(Feature::Li) && p.worker.is_none() {
        // The escrow module's store API key; only main serves /_synapse/client/mxstack/escrow.
        let file = paths
            .key_vault_store_api_key_file
            .file_name()
            .expect("a file")
            .to_string_lossy()
            .into_owned();
        volumes.push(volume_secret(
            "key-vault",
            KEY_VAULT_API_KEY,
            &[(KEY_VAULT_STORE_API_KEY, &file)],
        ));
        mounts.push(mount(
            "key-vault",
            &parent(&paths.key_vault_store_api_key_file),
        ));
    }
    (volumes, mounts)
}

fn command(ctx: &Ctx, p: &Process) -> Vec<String> {
    let hs = ctx.paths.homeserver_yaml().display().to_string();
    match p.worker {
        None => vec![
            "python".into(),
            "-m".into(),
            "synapse.app.homeserver".into(),
            "--config-path".into(),
            hs,
        ],
        Some(_) => vec![
            "python".into(),
            "-m".into(),
            "synapse.app.generic_worker".into(),
            "--config-path".into(),
            hs,
            "--config-path".into(),
            // Kubernetes expands $(POD_NAME): the pod name is the worker name.
            format!("{}/$(POD_NAME).yaml", ctx.paths.worker_config_dir.display()),
        ],
    }
}

fn statefulset(ctx: &Ctx, out: &mut Out, p: &Process, hash: String) {
    let file = format!("{}.yaml", p.name);
    let sel = selector(&p.group);
    let mut ports: Vec<ContainerPort> = Vec::new();
    let mut svc_ports = Vec::new();
    if p.serves_http {
        ports.push(container_port_of(reg::synapse::HTTP));
        svc_ports.push(service_port_of(reg::synapse::HTTP));
    }
    if p.replication_listener {
        ports.push(container_port_of(reg::synapse::REPLICATION));
        svc_ports.push(service_port_of(reg::synapse::REPLICATION));
    }
    ports.push(container_port_of(reg::synapse::METRICS));
    svc_ports.push(service_port_of(reg::synapse::METRICS));
    out.add(
        Phase::Main,
        &file,
        service(
            ctx,
            &p.name,
            reg::synapse::COMPONENT.name(),
            &sel,
            svc_ports,
            true,
        ),
    );

    // Processes with an HTTP listener answer /health; the others only have the metrics listener.
    let (ready, live): (Probe, Probe) = if p.serves_http {
        (
            ready_probe(&reg::synapse::COMPONENT, 5, 3),
            live_probe(&reg::synapse::COMPONENT, 15, 4),
        )
    } else {
        (tcp_probe("metrics", 5, 3), tcp_probe("metrics", 15, 4))
    };
    // Main may run database migrations on start: give it time before liveness applies.
    let startup = Probe {
        failure_threshold: Some(if p.worker.is_none() { 120 } else { 30 }),
        period_seconds: Some(5),
        ..ready.clone()
    };
    let (volumes, mounts) = volumes_and_mounts(ctx, p);
    let mut env_vars = vec![
        env_field("POD_NAME", "metadata.name"),
        env_secret("PGPASSWORD", DB_CREDENTIALS, DB_PASSWORD_KEY),
        env_secret("AWS_ACCESS_KEY_ID", S3_CREDENTIALS, S3_ACCESS_KEY_ID),
        env_secret("AWS_SECRET_ACCESS_KEY", S3_CREDENTIALS, S3_SECRET_KEY),
        env("PYTHONUNBUFFERED", "1"),
    ];
    if p.worker.is_none() {
        // Main does not use POD_NAME; keep its env minimal.
        env_vars.remove(0);
    }
    let c = Container {
        command: Some(command(ctx, p)),
        env: Some(env_vars),
        ports: Some(ports),
        resources: Some(resources(&p.resources)),
        readiness_probe: Some(ready),
        liveness_probe: Some(live),
        startup_probe: Some(startup),
        volume_mounts: Some(mounts),
        ..container(reg::synapse::COMPONENT.name(), &ctx.cfg.images.synapse)
    };
    let pod = PodSpec {
        containers: vec![c],
        volumes: Some(volumes),
        security_context: Some(pod_security(SYNAPSE_UID)),
        affinity: Some(spread(&sel)),
        automount_service_account_token: Some(false),
        termination_grace_period_seconds: Some(60),
        ..Default::default()
    };
    let mut w = Workload::new(
        &p.name,
        reg::synapse::COMPONENT.name(),
        p.replicas,
        sel,
        pod,
    );
    w.config_hash = Some(hash);
    out.add(Phase::Main, &file, w.stateful_set(ctx, &p.name, vec![]));
    let autoscaled = p.worker.is_some_and(|g| g.autoscaled());
    if p.replicas > 1 || autoscaled {
        out.add(Phase::Main, &file, w.pdb(ctx));
    }
    if let Some(g) = p.worker.filter(|g| g.autoscaled()) {
        out.add(Phase::Main, &file, hpa(ctx, g));
    }
}

/// Only for groups whose processes can be added without restarting others (synchrotron, generic);
/// never event persisters or federation senders (seed 004 issue 5.3).
fn hpa(ctx: &Ctx, g: &WorkerGroup) -> HorizontalPodAutoscaler {
    HorizontalPodAutoscaler {
        metadata: meta(ctx, &g.object_name(), reg::synapse::COMPONENT.name()),
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "StatefulSet".into(),
                name: g.object_name(),
            },
            min_replicas: Some(g.replicas as i32),
            max_replicas: g.max_replicas as i32,
            metrics: Some(vec![MetricSpec {
                type_: "Resource".into(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".into(),
                    target: MetricTarget {
                        type_: "Utilization".into(),
                        average_utilization: Some(HPA_CPU_PERCENT),
                        ..Default::default()
                    },
                }),
                ..Default::default()
            }]),
            // Scale down slowly (seed 004 issue 5.1): sync workers hold long-poll connections, so
            // removing one moves its users' sessions.
            behavior: Some(HorizontalPodAutoscalerBehavior {
                scale_down: Some(HPAScalingRules {
                    stabilization_window_seconds: Some(600),
                    policies: Some(vec![HPAScalingPolicy {
                        type_: "Pods".into(),
                        value: 1,
                        period_seconds: 300,
                    }]),
                    ..Default::default()
                }),
                scale_up: Some(HPAScalingRules {
                    stabilization_window_seconds: Some(60),
                    policies: Some(vec![HPAScalingPolicy {
                        type_: "Pods".into(),
                        value: 2,
                        period_seconds: 60,
                    }]),
                    ..Default::default()
                }),
            }),
        }),
        ..Default::default()
    }
}
