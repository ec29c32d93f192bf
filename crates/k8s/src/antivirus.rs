//! Antivirus (feature `antivirus`): clamd with its signatures, and the content scanner the
//! router sends media downloads through (seed 004 issue 2.10). Configs come from
//! `topology::antivirus`, the same functions `mxstack up` uses.
//!
//! Signatures live in a volume `signatures` mounted read-only into clamd at `/var/lib/clamav`:
//! - `antivirus.signature_updates: true` (default): an emptyDir. Init container `signatures-seed`
//!   copies the databases the clamav image ships with (`clamav/clamav:<version>` is preloaded;
//!   a `_base` image has none), then `freshclam-init` brings them up to date once, so a starting
//!   pod fetches only the difference and never the whole set (the ClamAV CDN rate-limits full
//!   downloads). A `freshclam` sidecar keeps them current from the configured mirror; clamd
//!   reloads them (`SelfCheck`). If the mirror cannot be reached at start, clamd starts with the
//!   image's signatures and the sidecar keeps trying; with no signatures at all clamd does not
//!   start, its PING probe fails and the scanner refuses media (fail closed).
//! - `antivirus.signature_updates: false` (air-gapped): no freshclam and no egress. The
//!   `clamav-signatures` PersistentVolumeClaim (ReadWriteMany, shared by every clamd replica) is
//!   filled by the operator with main/daily/bytecode.cvd from a cvdupdate mirror; clamd does not
//!   start on an empty volume.

use k8s_openapi::api::core::v1::{
    Container, PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, PodSpec, Probe, Volume,
};
use mxstack_spec::{Component, Feature, SecretName, Tier};
use mxstack_topology::antivirus;
use mxstack_topology::registry as reg;
use mxstack_topology::sizing::Resources;
use mxstack_topology::synapse::to_yaml as value_yaml;

use crate::meta::*;
use crate::{Ctx, Out, Phase};

const FILE: &str = "antivirus.yaml";
/// The uid of the clamav user in the official image (pod files are shared through fsGroup).
const CLAMAV_UID: i64 = 100;
/// The user images/mxstack/Dockerfile runs as.
const SCANNER_UID: i64 = 10001;
pub const SCANNER_CONFIG: &str = "content-scanner-config";
pub const SCANNER_SECRETS: &str = "content-scanner-secrets";
pub const CLAMAV_CONFIG: &str = "clamav-config";
pub const SIGNATURES_PVC: &str = "clamav-signatures";
/// clamd's and freshclam's `DatabaseDirectory`; also where the official image keeps the
/// databases it ships with.
const DB_DIR: &str = "/var/lib/clamav";
/// Where the seed init container mounts the signature volume (the image's own DB_DIR stays
/// visible to it).
const SEED_DIR: &str = "/signatures";
const CONF_DIR: &str = "/etc/mxstack-clamav";
const SCANNER_CONFIG_DIR: &str = "/mxstack/content-scanner";
const SCANNER_CONFIG_FILE: &str = "scanner.yaml";
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

/// freshclam loads every downloaded database into a test engine before it installs it
/// (`TestDatabases`, on by default), which takes as much memory as clamd's own engine; with a
/// small limit it is OOM-killed on every update. Without the test it needs little.
fn freshclam_resources(ctx: &Ctx, freshclam_conf: &str) -> Resources {
    let tests_databases = !freshclam_conf
        .lines()
        .any(|l| l.trim().eq_ignore_ascii_case("TestDatabases no"));
    if tests_databases {
        Resources {
            cpu_millis: 100,
            ..ctx.t.sizing.resources_for(Component::Clamav, ctx.cfg)
        }
    } else {
        Resources {
            cpu_millis: 100,
            memory_mib: 256,
        }
    }
}

fn render_clamav(ctx: &Ctx, out: &mut Out) {
    let clamd_conf = antivirus::clamd_conf(ctx.t, "0.0.0.0", reg::clamav::CLAMD.number, DB_DIR);
    let freshclam_conf = antivirus::freshclam_conf(ctx.t, DB_DIR);
    let hash = config_hash(&[&clamd_conf, &freshclam_conf]);
    out.add(
        Phase::Infrastructure,
        FILE,
        config_map(
            ctx,
            CLAMAV_CONFIG,
            reg::clamav::COMPONENT.name(),
            map(&[
                ("clamd.conf", &clamd_conf),
                ("freshclam.conf", &freshclam_conf),
            ]),
        ),
    );
    let sel = map(&[(LABEL_NAME, reg::clamav::COMPONENT.name())]);
    out.add(
        Phase::Infrastructure,
        FILE,
        service(
            ctx,
            reg::clamav::COMPONENT.name(),
            reg::clamav::COMPONENT.name(),
            &sel,
            vec![service_port_of(reg::clamav::CLAMD)],
            false,
        ),
    );
    let updates = ctx.cfg.antivirus.signature_updates;
    let clamd_config = format!("{CONF_DIR}/clamd.conf");
    let freshclam_config = format!("{CONF_DIR}/freshclam.conf");
    // Readiness is clamd answering PING (clamdscan reads the address from clamd.conf), not just
    // an open port: clamd listens only once its databases are loaded, and stops answering when
    // it is stuck.
    let clamd_config_arg = format!("--config-file={clamd_config}");
    let ping = ["clamdscan", &clamd_config_arg, "--ping=1"];
    let clamd = Container {
        command: Some(vec![
            "clamd".into(),
            "--foreground".into(),
            clamd_config_arg.clone(),
        ]),
        ports: Some(vec![container_port_of(reg::clamav::CLAMD)]),
        resources: Some(resources(
            &ctx.t.sizing.resources_for(Component::Clamav, ctx.cfg),
        )),
        readiness_probe: Some(exec_probe(&ping, 10, 3)),
        liveness_probe: Some(exec_probe(&ping, 30, 4)),
        // Loading the official databases takes a minute or two: up to 5 minutes before the
        // liveness probe counts.
        startup_probe: Some(Probe {
            initial_delay_seconds: Some(10),
            ..exec_probe(&ping, 10, 30)
        }),
        // clamd only reads the databases; it unpacks them in its TemporaryDirectory (/tmp).
        volume_mounts: Some(vec![
            mount("config", CONF_DIR),
            mount("signatures", DB_DIR),
            mount_rw("tmp", "/tmp"),
        ]),
        ..container("clamd", &ctx.cfg.images.clamav)
    };
    let freshclam_resources = resources(&freshclam_resources(ctx, &freshclam_conf));
    let freshclam = |name: &str, command: Vec<String>| Container {
        command: Some(command),
        resources: Some(freshclam_resources.clone()),
        volume_mounts: Some(vec![
            mount("config", CONF_DIR),
            mount_rw("signatures", DB_DIR),
            mount_rw("tmp", "/tmp"),
        ]),
        ..container(name, &ctx.cfg.images.clamav)
    };
    let freshclam_once = format!("freshclam --config-file={freshclam_config} --foreground");
    let init_containers = updates.then(|| {
        vec![
            Container {
                // Copies, never rewrites: the image's databases, as they are.
                command: Some(vec![
                    "sh".into(),
                    "-c".into(),
                    format!(
                        "for f in {DB_DIR}/*.cvd {DB_DIR}/*.cld; do \
                         if [ -f \"$f\" ]; then cp \"$f\" {SEED_DIR}/; fi; done; \
                         ls -l {SEED_DIR}"
                    ),
                ]),
                volume_mounts: Some(vec![mount_rw("signatures", SEED_DIR)]),
                resources: Some(resources(&Resources {
                    cpu_millis: 100,
                    memory_mib: 128,
                })),
                ..container("signatures-seed", &ctx.cfg.images.clamav)
            },
            freshclam(
                "freshclam-init",
                vec![
                    "sh".into(),
                    "-c".into(),
                    format!(
                        "{freshclam_once} || echo 'freshclam failed: clamd starts with the \
                         signatures it has; the freshclam sidecar keeps trying'"
                    ),
                ],
            ),
        ]
    });
    let mut containers = vec![clamd];
    if updates {
        containers.push(freshclam(
            "freshclam",
            vec![
                "freshclam".into(),
                format!("--config-file={freshclam_config}"),
                "--foreground".into(),
                "--daemon".into(),
            ],
        ));
    }
    let signatures = if updates {
        volume_empty("signatures")
    } else {
        out.add(Phase::Infrastructure, FILE, signatures_pvc(ctx));
        Volume {
            name: "signatures".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: SIGNATURES_PVC.into(),
                read_only: Some(true),
            }),
            ..Default::default()
        }
    };
    let pod = PodSpec {
        init_containers,
        containers,
        volumes: Some(vec![
            volume_config_map("config", CLAMAV_CONFIG),
            signatures,
            volume_empty("tmp"),
        ]),
        security_context: Some(pod_security(CLAMAV_UID)),
        affinity: Some(spread(&sel)),
        automount_service_account_token: Some(false),
        ..Default::default()
    };
    let replicas = replicas(ctx, Component::Clamav);
    let mut w = Workload::new(
        reg::clamav::COMPONENT.name(),
        reg::clamav::COMPONENT.name(),
        replicas,
        sel,
        pod,
    );
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
        &format!("0.0.0.0:{}", reg::content_scanner::HTTP.number),
        &secret_path,
    ));
    let hash = config_hash(&[&config]);
    out.add(
        Phase::Main,
        FILE,
        config_map(
            ctx,
            SCANNER_CONFIG,
            reg::content_scanner::COMPONENT.name(),
            map(&[(SCANNER_CONFIG_FILE, &config)]),
        ),
    );
    out.add(
        Phase::Main,
        FILE,
        secret(
            ctx,
            SCANNER_SECRETS,
            reg::content_scanner::COMPONENT.name(),
            "Opaque",
            map(&[(
                antivirus::REQUEST_SECRET_FILE,
                ctx.secrets.get(SecretName::ContentScannerRequestSecret),
            )]),
        ),
    );
    let sel = map(&[(LABEL_NAME, reg::content_scanner::COMPONENT.name())]);
    let mut svc = service(
        ctx,
        reg::content_scanner::COMPONENT.name(),
        reg::content_scanner::COMPONENT.name(),
        &sel,
        vec![service_port_of(reg::content_scanner::HTTP)],
        false,
    );
    if ctx.has(Feature::Monitoring) {
        label_for_scraping(&mut svc, reg::content_scanner::COMPONENT.name());
    }
    out.add(Phase::Main, FILE, svc);
    let c = Container {
        command: Some(vec![
            "mxstack".into(),
            "serve".into(),
            "content-scanner".into(),
            "--config".into(),
            format!("{SCANNER_CONFIG_DIR}/{SCANNER_CONFIG_FILE}"),
            "--threads".into(),
            antivirus::scanner_threads(ctx.t).to_string(),
        ]),
        ports: Some(vec![container_port_of(reg::content_scanner::HTTP)]),
        resources: Some(resources(
            &ctx.t
                .sizing
                .resources_for(Component::ContentScanner, ctx.cfg),
        )),
        // Ready only while clamd answers PING: without clamd no pod is an endpoint, and the
        // router answers 503 instead of passing unscanned media (no fallback server).
        readiness_probe: Some(ready_probe(&reg::content_scanner::COMPONENT, 5, 3)),
        liveness_probe: Some(live_probe(&reg::content_scanner::COMPONENT, 10, 6)),
        // Nothing is written to disk (large files are streamed twice, never spooled): the root
        // filesystem stays read-only and there is no writable volume.
        volume_mounts: Some(vec![
            mount("config", SCANNER_CONFIG_DIR),
            mount("secrets", SECRET_DIR),
        ]),
        ..container(
            reg::content_scanner::COMPONENT.name(),
            &ctx.cfg.images.mxstack,
        )
    };
    let pod = PodSpec {
        containers: vec![c],
        volumes: Some(vec![
            volume_config_map("config", SCANNER_CONFIG),
            volume_secret(
                "secrets",
                SCANNER_SECRETS,
                &[(
                    antivirus::REQUEST_SECRET_FILE,
                    antivirus::REQUEST_SECRET_FILE,
                )],
            ),
        ]),
        security_context: Some(pod_security(SCANNER_UID)),
        affinity: Some(spread(&sel)),
        automount_service_account_token: Some(false),
        ..Default::default()
    };
    let replicas = replicas(ctx, Component::ContentScanner);
    let mut w = Workload::new(
        reg::content_scanner::COMPONENT.name(),
        reg::content_scanner::COMPONENT.name(),
        replicas,
        sel,
        pod,
    );
    w.config_hash = Some(hash);
    out.add(Phase::Main, FILE, w.deployment(ctx));
    if replicas > 1 {
        out.add(Phase::Main, FILE, w.pdb(ctx));
    }
}

/// The air-gapped signature volume, filled by the operator and read by every clamd replica
/// (ReadWriteMany: the storage class must support it, e.g. NFS or CephFS).
fn signatures_pvc(ctx: &Ctx) -> PersistentVolumeClaim {
    let mut pvc = pvc_template(ctx, SIGNATURES_PVC, "2Gi");
    pvc.metadata = meta(ctx, SIGNATURES_PVC, reg::clamav::COMPONENT.name());
    if let Some(spec) = pvc.spec.as_mut() {
        spec.access_modes = Some(vec!["ReadWriteMany".into()]);
    }
    pvc
}
