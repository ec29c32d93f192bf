//! The MatrixRTC authorization service (feature `calls`): `mxstack serve rtc-auth` from the
//! mxstack image, behind the edge at `livekit-jwt.<domain>` (only its API and health paths).
//! Its config comes from `topology::rtc_auth::config`, as the local stack's; the LiveKit keys
//! reach it as LIVEKIT_KEYS from the one `livekit-keys` Secret LiveKit reads too.

use k8s_openapi::api::core::v1::{Container, PodSpec};
use mxstack_spec::{Component, Tier};
use mxstack_topology::registry as reg;
use mxstack_topology::rtc_auth;

use mxstack_topology::synapse::to_yaml as value_yaml;

use crate::meta::*;
use crate::secrets::{LIVEKIT_KEYS, LIVEKIT_KEYS_KEY};
use crate::{Ctx, Out, Phase};

const FILE: &str = "rtc-auth.yaml";
const CONFIG: &str = "rtc-auth-config";
const CONFIG_DIR: &str = "/mxstack/rtc-auth";
/// The mxstack image's unprivileged user.
const UID: i64 = 10001;

pub fn render(ctx: &Ctx, out: &mut Out) {
    let name = reg::rtc_auth::COMPONENT.name();
    let livekit_api = format!(
        "http://{}:{}",
        ctx.addr.svc(reg::livekit::COMPONENT.name()),
        reg::livekit::HTTP.number
    );
    let config = value_yaml(&rtc_auth::config_value(
        ctx.t,
        &ctx.addr,
        &format!("0.0.0.0:{}", reg::rtc_auth::HTTP.number),
        Some(livekit_api),
    ));
    let hash = config_hash(&[&config]);
    out.add(
        Phase::Calls,
        FILE,
        config_map(ctx, CONFIG, name, map(&[(rtc_auth::CONFIG_FILE, &config)])),
    );
    let sel = map(&[(LABEL_NAME, name)]);
    let mut svc = service(
        ctx,
        name,
        name,
        &sel,
        vec![service_port_of(reg::rtc_auth::HTTP)],
        false,
    );
    if ctx.has(mxstack_spec::Feature::Monitoring) {
        label_for_scraping(&mut svc, name);
    }
    out.add(Phase::Calls, FILE, svc);
    let c = Container {
        command: Some(vec![
            "mxstack".into(),
            "serve".into(),
            "rtc-auth".into(),
            "--config".into(),
            format!("{CONFIG_DIR}/{}", rtc_auth::CONFIG_FILE),
        ]),
        env: Some(vec![env_secret(
            rtc_auth::ENV_KEYS,
            LIVEKIT_KEYS,
            LIVEKIT_KEYS_KEY,
        )]),
        ports: Some(vec![container_port_of(reg::rtc_auth::HTTP)]),
        resources: Some(resources(
            &ctx.t.sizing.resources_for(Component::RtcAuth, ctx.cfg),
        )),
        readiness_probe: Some(ready_probe(&reg::rtc_auth::COMPONENT, 5, 3)),
        liveness_probe: Some(live_probe(&reg::rtc_auth::COMPONENT, 10, 6)),
        volume_mounts: Some(vec![mount("config", CONFIG_DIR)]),
        ..container(name, &ctx.cfg.images.mxstack)
    };
    let pod = PodSpec {
        containers: vec![c],
        volumes: Some(vec![volume_config_map("config", CONFIG)]),
        security_context: Some(pod_security(UID)),
        affinity: Some(spread(&sel)),
        automount_service_account_token: Some(false),
        ..Default::default()
    };
    // Stateless: two replicas (spread over nodes) from 1K up, unless overridden.
    let replicas = ctx
        .cfg
        .override_for(Component::RtcAuth)
        .replicas
        .unwrap_or(if ctx.cfg.scale == Tier::T100 { 1 } else { 2 });
    let mut w = Workload::new(name, name, replicas, sel, pod);
    w.config_hash = Some(hash);
    out.add(Phase::Calls, FILE, w.deployment(ctx));
    if replicas > 1 {
        out.add(Phase::Calls, FILE, w.pdb(ctx));
    }
}
