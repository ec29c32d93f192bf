//! Voice and video (feature `calls`): coturn for TURN and LiveKit as the SFU for group calls.
//!
//! Both take call media directly from clients on a LoadBalancer Service (not through the edge,
//! which only carries HTTP). Their public address comes from the node they run on (downward API
//! `status.hostIP`), never from asking an internet service (seed 004 issue 6.4): schedule them on
//! the `calls` nodes, whose addresses are public, or front them with a LoadBalancer that preserves
//! the node address (e.g. MetalLB with `externalTrafficPolicy: Local`).

use k8s_openapi::api::core::v1::{Container, ContainerPort, PodSpec, Service, ServicePort};
use mxstack_spec::Component;
use mxstack_topology::coturn::{settings, Setting};
use mxstack_topology::registry as reg;
use mxstack_topology::Addressing;
use serde_json::json;

use crate::addressing::TURN_CERT_DIR;
use crate::meta::*;
use crate::secrets::{LIVEKIT_KEYS, LIVEKIT_KEYS_KEY, TURN_AUTH, TURN_SECRET_KEY};
use crate::{Ctx, Out, Phase};

/// Secret (cert-manager) with the TLS certificate for `turns:` on 5349.
pub const TURN_TLS_SECRET: &str = "tls-turn";
/// `nobody` in the coturn image.
const COTURN_UID: i64 = 65534;
const LIVEKIT_UID: i64 = 1000;
/// Where LiveKit reads coturn's shared secret (`rtc.turn_servers[].secret_file`).
const LIVEKIT_TURN_DIR: &str = "/etc/livekit-turn";

fn load_balancer(
    ctx: &Ctx,
    name: &str,
    app: &str,
    sel: &Labels,
    ports: Vec<ServicePort>,
) -> Service {
    let mut svc = service(ctx, name, app, sel, ports, false);
    let spec = svc.spec.as_mut().expect("service has a spec");
    spec.type_ = Some("LoadBalancer".into());
    // Keep the client's source address (TURN and ICE need it) and only route to nodes with a pod.
    spec.external_traffic_policy = Some("Local".into());
    svc
}

pub fn render(ctx: &Ctx, out: &mut Out) {
    coturn(ctx, out);
    livekit(ctx, out);
}

/// coturn's ports: its listeners on UDP and TCP (`turn-udp`, ...), then every relay port. A
/// LoadBalancer Service cannot expose a port range, so every relay port is listed.
fn coturn_ports(ctx: &Ctx) -> (Vec<ServicePort>, Vec<ContainerPort>) {
    let mut named: Vec<(String, u16, &str)> = Vec::new();
    for p in [reg::coturn::TURN, reg::coturn::TURNS] {
        named.push((format!("{}-udp", p.name), p.number, "UDP"));
        named.push((format!("{}-tcp", p.name), p.number, "TCP"));
    }
    for p in reg::coturn::relay(ctx.cfg) {
        named.push((format!("relay-{p}"), p, "UDP"));
    }
    named
        .iter()
        .map(|(name, n, proto)| {
            (
                service_port(name, *n, proto),
                container_port(name, *n, proto),
            )
        })
        .unzip()
}

/// coturn's settings as arguments (`-n`: no config file); the secret is expanded by Kubernetes
/// from the turn-auth Secret at start, so the object holds no value.
fn coturn_args(ctx: &Ctx) -> Vec<String> {
    let turn = ctx.addr.turn(ctx.cfg);
    let mut args = vec!["-n".to_string()];
    args.extend(settings(ctx.t, &turn).into_iter().map(|s| match s {
        Setting::Flag(k) => format!("--{k}"),
        Setting::Value(k, v) => format!("--{k}={v}"),
        Setting::Secret(k) => format!("--{k}=$(TURN_SECRET)"),
    }));
    args
}

fn coturn(ctx: &Ctx, out: &mut Out) {
    let file = "coturn.yaml";
    let name = reg::coturn::COMPONENT.name();
    let sel = map(&[(LABEL_NAME, name)]);
    let (svc_ports, ports) = coturn_ports(ctx);
    out.add(
        Phase::Calls,
        file,
        load_balancer(ctx, name, name, &sel, svc_ports),
    );
    let mut env = vec![env_secret("TURN_SECRET", TURN_AUTH, TURN_SECRET_KEY)];
    if ctx.cfg.calls.external_ip.is_none() {
        env.push(env_field("EXTERNAL_IP", "status.hostIP"));
    }
    let c = Container {
        args: Some(coturn_args(ctx)),
        env: Some(env),
        ports: Some(ports),
        resources: Some(resources(
            &ctx.t.sizing.resources_for(Component::Coturn, ctx.cfg),
        )),
        readiness_probe: Some(tcp_probe("turn-tcp", 5, 3)),
        liveness_probe: Some(tcp_probe("turn-tcp", 10, 6)),
        volume_mounts: Some(vec![mount("certs", TURN_CERT_DIR), mount_rw("tmp", "/tmp")]),
        ..container(name, &ctx.cfg.images.coturn)
    };
    let pod = PodSpec {
        containers: vec![c],
        volumes: Some(vec![
            volume_secret("certs", TURN_TLS_SECRET, &[]),
            volume_empty("tmp"),
        ]),
        security_context: Some(pod_security(COTURN_UID)),
        automount_service_account_token: Some(false),
        ..Default::default()
    };
    // One replica: a TURN allocation lives in one process, and peers reach its relay port through
    // the one Service address, so replicas behind it would split allocations.
    let w = Workload::new(name, name, 1, sel, pod);
    out.add(Phase::Calls, file, w.deployment(ctx));
}

fn livekit(ctx: &Ctx, out: &mut Out) {
    let file = "livekit.yaml";
    let sel = map(&[(LABEL_NAME, reg::livekit::COMPONENT.name())]);
    let turn_host = ctx.cfg.hostnames().turn;
    let turn_server = |port: u16, protocol: &str| {
        json!({
            "host": turn_host,
            "port": port,
            "protocol": protocol,
            // coturn's REST shared secret, from the turn-auth Secret (never in this ConfigMap):
            // LiveKit hands clients short-lived coturn credentials made with it.
            "secret_file": format!("{LIVEKIT_TURN_DIR}/{TURN_SECRET_KEY}"),
            "ttl": 3600,
        })
    };
    let config = json!({
        "port": reg::livekit::HTTP.number,
        "rtc": {
            "tcp_port": reg::livekit::RTC_TCP.number,
            "udp_port": reg::livekit::RTC_UDP.number,
            // The node address is given on the command line; no STUN lookup on the internet.
            "use_external_ip": false,
            // Clients that cannot reach the media ports relay through our coturn (TLS on 5349,
            // UDP on 3478); LiveKit's embedded TURN stays off (docs/DECISIONS.md).
            "turn_servers": [
                turn_server(reg::coturn::TURNS.number, "tls"),
                turn_server(reg::coturn::TURN.number, "udp"),
            ],
        },
        "turn": { "enabled": false },
        // Only the MatrixRTC authorization service creates rooms (for our own users); a
        // participant's token cannot (lk-jwt-service's setup).
        "room": { "auto_create": false },
        "logging": { "level": "info", "json": true },
    });
    let text = to_yaml(&config);
    let hash = config_hash(&[&text]);
    out.add(
        Phase::Calls,
        file,
        config_map(
            ctx,
            "livekit-config",
            reg::livekit::COMPONENT.name(),
            map(&[("livekit.yaml", &text)]),
        ),
    );
    out.add(
        Phase::Calls,
        file,
        service(
            ctx,
            reg::livekit::COMPONENT.name(),
            reg::livekit::COMPONENT.name(),
            &sel,
            vec![service_port_of(reg::livekit::HTTP)],
            false,
        ),
    );
    out.add(
        Phase::Calls,
        file,
        load_balancer(
            ctx,
            "livekit-rtc",
            reg::livekit::COMPONENT.name(),
            &sel,
            vec![
                service_port_of(reg::livekit::RTC_TCP),
                service_port_of(reg::livekit::RTC_UDP),
            ],
        ),
    );
    let c = Container {
        args: Some(vec![
            "--config".into(),
            "/etc/livekit/livekit.yaml".into(),
            "--node-ip".into(),
            "$(NODE_IP)".into(),
        ]),
        env: Some(vec![
            // "<key>: <secret>", read by livekit-server from the environment.
            env_secret("LIVEKIT_KEYS", LIVEKIT_KEYS, LIVEKIT_KEYS_KEY),
            env_field("NODE_IP", "status.hostIP"),
        ]),
        ports: Some(vec![
            container_port_of(reg::livekit::HTTP),
            container_port_of(reg::livekit::RTC_TCP),
            container_port_of(reg::livekit::RTC_UDP),
        ]),
        resources: Some(resources(
            &ctx.t.sizing.resources_for(Component::Livekit, ctx.cfg),
        )),
        readiness_probe: Some(http_probe("/", "http", 5, 3)),
        liveness_probe: Some(http_probe("/", "http", 10, 6)),
        volume_mounts: Some(vec![
            mount("config", "/etc/livekit"),
            mount("turn", LIVEKIT_TURN_DIR),
            mount_rw("tmp", "/tmp"),
        ]),
        ..container(reg::livekit::COMPONENT.name(), &ctx.cfg.images.livekit)
    };
    let pod = PodSpec {
        containers: vec![c],
        volumes: Some(vec![
            volume_config_map("config", "livekit-config"),
            volume_secret("turn", TURN_AUTH, &[(TURN_SECRET_KEY, TURN_SECRET_KEY)]),
            volume_empty("tmp"),
        ]),
        security_context: Some(pod_security(LIVEKIT_UID)),
        automount_service_account_token: Some(false),
        ..Default::default()
    };
    // One replica: several LiveKit nodes need a shared Redis for room routing, which the network
    // flows do not include yet.
    let mut w = Workload::new(
        reg::livekit::COMPONENT.name(),
        reg::livekit::COMPONENT.name(),
        1,
        sel,
        pod,
    );
    w.config_hash = Some(hash);
    out.add(Phase::Calls, file, w.deployment(ctx));
}
