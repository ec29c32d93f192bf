//! Antivirus (feature `antivirus`): clamd with its signatures, and the content scanner the
//! router sends media downloads through (seed 004 issue 2.10). Configs come from
//! `topology::antivirus`, the same functions `mxstack up` uses.
//!
//! Signatures: with `antivirus.signature_updates` an init container runs freshclam once (clamd
//! refuses to start on an empty database) and a sidecar keeps them current from the configured
//! mirror. Air-gapped (`signature_updates: false`): no freshclam and no egress; the operator
//! copies main/daily/bytecode.cvd into the `clamav-signatures` PersistentVolumeClaim.

use k8s_openapi::api::core::v1::{
    Container, PersistentVolumeClaimVolumeSource, PodSpec, Probe, Volume,
};
use mxstack_spec::{Component, SecretName, Tier};
use mxstack_topology::addressing::{CLAMAV, CLAMD_PORT, CONTENT_SCANNER, CONTENT_SCANNER_PORT};
use mxstack_topology::antivirus;
use mxstack_topology::synapse::to_yaml as value_yaml;

use crate::meta::*;
use crate::{Ctx, Out, Phase};

const FILE: &str = "antivirus.yaml";
/// The uid of the clamav user in the official image.
const CLAMAV_UID: i64 = 100;
const SCANNER_UID: i64 = 10001;
pub const SCANNER_CONFIG: &str = "content-scanner-config";
pub const SCANNER_SECRETS: &str = "content-scanner-secrets";
pub const CLAMAV_CONFIG: &str = "clamav-config";
pub const SIGNATURES_PVC: &str = "clamav-signatures";
const DB_DIR: &str = "/var/lib/clamav";
const CONF_DIR: &str = "/etc/mxstack-clamav";
const SECRET_DIR: &str = "/mxstack/secrets/content-scanner";

pub fn render(ctx: &Ctx, out: &mut Out) {
    render_clamav(ctx, out);
    render_scanner(ctx, out);
}

/// One replica at 100 CCU, two (spread over nodes) from 1K up, unless overridden.
fn replicas(ctx: &Ctx, c: Component) -> u32 {
    ctx.cfg
        .override_for(c)
        .replicas
        .unwrap_or(if ctx.cfg.scale == Tier::T100 { 1 } else { 2 })
}

fn render_clamav(ctx: &Ctx, out: &mut Out) {
    let clamd_conf = antivirus::clamd_conf(ctx.t, "0.0.0.0", CLAMD_PORT, DB_DIR);
    let freshclam_conf = antivirus::freshclam_conf(ctx.t, DB_DIR);
    let hash = config_hash(&[&clamd_conf, &freshclam_conf]);
    out.add(
        Phase::Infrastructure,
        FILE,
        config_map(
            ctx,
            CLAMAV_CONFIG,
            CLAMAV,
            map(&[
                ("clamd.conf", &clamd_conf),
                ("freshclam.conf", &freshclam_conf),
            ]),
        ),
    );
    let sel = map(&[(LABEL_NAME, CLAMAV)]);
    out.add(
        Phase::Infrastructure,
        FILE,
        service(
            ctx,
            CLAMAV,
            CLAMAV,
            &sel,
            vec![service_port("clamd", CLAMD_PORT, "TCP")],
            false,
        ),
    );
    let updates = ctx.cfg.antivirus.signature_updates;
    let clamd_config = format!("{CONF_DIR}/clamd.conf");
    let freshclam_config = format!("{CONF_DIR}/freshclam.conf");
    // Readiness is clamd answering PING, not just an open port.
    let ping = ["clamdscan", "--config-file", &clamd_config, "--ping", "1"];
    let clamd = Container {
        command: Some(vec![
            "clamd".into(),
            "--foreground".into(),
            format!("--config-file={clamd_config}"),
        ]),
        ports: Some(vec![container_port("clamd", CLAMD_PORT, "TCP")]),
        resources: Some(resources(
            &ctx.t.sizing.resources_for(Component::Clamav, ctx.cfg),
        )),
        readiness_probe: Some(exec_probe(&ping, 10, 3)),
        liveness_probe: Some(exec_probe(&ping, 30, 4)),
        // Loading the official databases takes a minute or two.
        startup_probe: Some(Probe {
            initial_delay_seconds: Some(10),
            ..exec_probe(&ping, 10, 30)
        }),
        volume_mounts: Some(vec![
            mount("config", CONF_DIR),
            mount_rw("signatures", DB_DIR),
            mount_rw("tmp", "/tmp"),
            mount_rw("run", "/run/clamav"),
        ]),
        ..container("clamd", &ctx.cfg.images.clamav)
    };
    let freshclam = |name: &str, daemon: bool| {
        let mut cmd = vec![
            "freshclam".to_string(),
            format!("--config-file={freshclam_config}"),
            "--foreground".into(),
        ];
        if daemon {
            cmd.push("--daemon".into());
        }
        Container {
            command: Some(cmd),
            resources: Some(resources(&mxstack_topology::sizing::Resources {
                cpu_millis: 100,
                memory_mib: 512,
            })),
            volume_mounts: Some(vec![
                mount("config", CONF_DIR),
                mount_rw("signatures", DB_DIR),
                mount_rw("tmp", "/tmp"),
            ]),
            ..container(name, &ctx.cfg.images.clamav)
        }
    };
    let signatures = if updates {
        volume_empty("signatures")
    } else {
        Volume {
            name: "signatures".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: SIGNATURES_PVC.into(),
                read_only: Some(false),
            }),
            ..Default::default()
        }
    };
    if !updates {
        out.add(Phase::Infrastructure, FILE, signatures_pvc(ctx));
    }
    let mut containers = vec![clamd];
    if updates {
        containers.push(freshclam("freshclam", true));
    }
    let pod = PodSpec {
        init_containers: updates.then(|| vec![freshclam("freshclam-init", false)]),
        containers,
        volumes: Some(vec![
            volume_config_map("config", CLAMAV_CONFIG),
            signatures,
            volume_empty("tmp"),
            volume_empty("run"),
        ]),
        security_context: Some(pod_security(CLAMAV_UID)),
        affinity: Some(spread(&sel)),
        automount_service_account_token: Some(false),
        ..Default::default()
    };
    let replicas = ctx
        .cfg
        .override_for(Component::Clamav)
        .replicas
        .unwrap_or(if ctx.cfg.scale == Tier::T100 { 1 } else { 2 });
    let mut w = Workload::new(CLAMAV, CLAMAV, replicas, sel, pod);
    w.config_hash = Some(hash);
    out.add(Phase::Infrastructure, FILE, w.deployment(ctx));
    if replicas > 1 {
        out.add(Phase::Infrastructure, FILE, w.pdb(ctx));
    }
}

fn render_scanner(ctx: &Ctx, out: &mut Out) {
    let secret_path = format!("{SECRET_DIR}/{}", antivirus::REQUEST_SECRET_FILE);
    let config = value_yaml(&antivirus::scanner_config(
        ctx.t,
        &ctx.addr,
        &format!("0.0.0.0:{CONTENT_SCANNER_PORT}"),
        &secret_path,
    ));
    let hash = config_hash(&[&config]);
    out.add(
        Phase::Main,
        FILE,
        config_map(
            ctx,
            SCANNER_CONFIG,
            CONTENT_SCANNER,
            map(&[("scanner.yaml", &config)]),
        ),
    );
    out.add(
        Phase::Main,
        FILE,
        secret(
            ctx,
            SCANNER_SECRETS,
            CONTENT_SCANNER,
            "Opaque",
            map(&[(
                antivirus::REQUEST_SECRET_FILE,
                ctx.secrets.get(SecretName::ContentScannerRequestSecret),
            )]),
        ),
    );
    let sel = map(&[(LABEL_NAME, CONTENT_SCANNER)]);
    let mut svc = service(
        ctx,
        CONTENT_SCANNER,
        CONTENT_SCANNER,
        &sel,
        vec![service_port("http", CONTENT_SCANNER_PORT, "TCP")],
        false,
    );
    if ctx.has(mxstack_spec::Feature::Monitoring) {
        svc.metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert(
                crate::monitoring::METRICS_LABEL.into(),
                CONTENT_SCANNER.into(),
            );
    }
    out.add(Phase::Main, FILE, svc);
    let c = Container {
        command: Some(vec![
            "mxstack".into(),
            "serve".into(),
            "content-scanner".into(),
            "--config".into(),
            "/mxstack/content-scanner/scanner.yaml".into(),
        ]),
        ports: Some(vec![container_port("http", CONTENT_SCANNER_PORT, "TCP")]),
        resources: Some(resources(
            &ctx.t
                .sizing
                .resources_for(Component::ContentScanner, ctx.cfg),
        )),
        readiness_probe: Some(http_probe("/ready", "http", 5, 3)),
        liveness_probe: Some(http_probe("/health", "http", 10, 6)),
        volume_mounts: Some(vec![
            mount("config", "/mxstack/content-scanner"),
            mount("secrets", SECRET_DIR),
        ]),
        ..container(CONTENT_SCANNER, &ctx.cfg.images.mxstack)
    };
    let pod = PodSpec {
        containers: vec![c],
        volumes: Some(vec![
            volume_config_map("config", SCANNER_CONFIG),
            volume_secret("secrets", SCANNER_SECRETS, &[]),
        ]),
        security_context: Some(pod_security(SCANNER_UID)),
        affinity: Some(spread(&sel)),
        automount_service_account_token: Some(false),
        ..Default::default()
    };
    let replicas = replicas(ctx, Component::ContentScanner);
    let mut w = Workload::new(CONTENT_SCANNER, CONTENT_SCANNER, replicas, sel, pod);
    w.config_hash = Some(hash);
    out.add(Phase::Main, FILE, w.deployment(ctx));
    if replicas > 1 {
        out.add(Phase::Main, FILE, w.pdb(ctx));
    }
}

/// The air-gapped signature volume, filled by the operator and read by every clamd replica
/// (ReadWriteMany: the storage class must support it, e.g. NFS or CephFS).
fn signatures_pvc(ctx: &Ctx) -> k8s_openapi::api::core::v1::PersistentVolumeClaim {
    let mut pvc = pvc_template(ctx, SIGNATURES_PVC, "2Gi");
    pvc.metadata = meta(ctx, SIGNATURES_PVC, CLAMAV);
    if let Some(spec) = pvc.spec.as_mut() {
        spec.access_modes = Some(vec!["ReadWriteMany".into()]);
    }
    pvc
}
