//! Voice and video (feature `calls`): coturn for TURN and LiveKit as the SFU for group calls.
//!
//! Both take call media directly from clients on a LoadBalancer Service (not through the edge,
//! which only carries HTTP). Their public address comes from the node they run on (downward API
//! `status.hostIP`), never from asking an internet service (seed 004 issue 6.4): schedule them on
//! the `calls` nodes, whose addresses are public, or front them with a LoadBalancer that preserves
//! the node address (e.g. MetalLB with `externalTrafficPolicy: Local`).

use k8s_openapi::api::core::v1::{Container, PodSpec, Service, ServicePort};
use k8s_openapi::api::networking::v1::NetworkPolicyPort;
use mxstack_spec::Component;
use mxstack_topology::registry as reg;
use serde_json::json;

use crate::meta::*;
use crate::secrets::{LIVEKIT_KEYS, LIVEKIT_KEYS_KEY, TURN_AUTH, TURN_SECRET_KEY};
use crate::{Ctx, Out, Phase};

/// TURN relay ports. A LoadBalancer Service cannot expose a port range, so the range is small and
/// every port is listed; each relayed call leg uses one port.
pub const RELAY_MIN: u16 = 49152;
pub const RELAY_MAX: u16 = 49183;
pub const LIVEKIT_RTC_TCP: u16 = 7881;
/// LiveKit multiplexes all WebRTC UDP traffic on this one port (`rtc.udp_port`), which a
/// LoadBalancer can expose, instead of a 50000-60000 range it cannot.
pub const LIVEKIT_RTC_UDP: u16 = 7882;
/// Secret (cert-manager) with the TLS certificate for `turns:` on 5349.
pub const TURN_TLS_SECRET: &str = "tls-turn";
/// `nobody` in the coturn image.
const COTURN_UID: i64 = 65534;
const LIVEKIT_UID: i64 = 1000;

pub fn coturn_policy_ports() -> Vec<NetworkPolicyPort> {
    vec![
        port("UDP", reg::coturn::TURN.number),
        port("TCP", reg::coturn::TURN.number),
        port("UDP", reg::coturn::TURNS.number),
        port("TCP", reg::coturn::TURNS.number),
        port_range("UDP", RELAY_MIN, RELAY_MAX),
    ]
}

pub fn livekit_policy_ports() -> Vec<NetworkPolicyPort> {
    vec![port("TCP", LIVEKIT_RTC_TCP), port("UDP", LIVEKIT_RTC_UDP)]
}

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

fn coturn(ctx: &Ctx, out: &mut Out) {
    let file = "coturn.yaml";
    let sel = map(&[(LABEL_NAME, reg::coturn::COMPONENT.name())]);
    let mut svc_ports = vec![
        service_port("turn-udp", reg::coturn::TURN.number, "UDP"),
        service_port("turn-tcp", reg::coturn::TURN.number, "TCP"),
        service_port("turns-udp", reg::coturn::TURNS.number, "UDP"),
        service_port("turns-tcp", reg::coturn::TURNS.number, "TCP"),
    ];
    let mut ports = vec![
        container_port("turn-udp", reg::coturn::TURN.number, "UDP"),
        container_port("turn-tcp", reg::coturn::TURN.number, "TCP"),
        container_port("turns-udp", reg::coturn::TURNS.number, "UDP"),
        container_port("turns-tcp", reg::coturn::TURNS.number, "TCP"),
    ];
    for p in RELAY_MIN..=RELAY_MAX {
        let name = format!("relay-{p}");
        svc_ports.push(service_port(&name, p, "UDP"));
        ports.push(container_port(&name, p, "UDP"));
    }
    out.add(
        Phase::Calls,
        file,
        load_balancer(
            ctx,
            reg::coturn::COMPONENT.name(),
            reg::coturn::COMPONENT.name(),
            &sel,
            svc_ports,
        ),
    );
    let mut args: Vec<String> = vec![
        "-n".into(),
        "--log-file=stdout".into(),
        format!("--listening-port={}", reg::coturn::TURN.number),
        format!("--tls-listening-port={}", reg::coturn::TURNS.number),
        format!("--min-port={RELAY_MIN}"),
        format!("--max-port={RELAY_MAX}"),
        "--use-auth-secret".into(),
        // Expanded by Kubernetes from the turn-auth Secret at start; the object holds no value.
        "--static-auth-secret=$(TURN_SECRET)".into(),
        format!("--realm={}", ctx.cfg.domain),
        "--external-ip=$(EXTERNAL_IP)".into(),
        "--cert=/certs/tls.crt".into(),
        "--pkey=/certs/tls.key".into(),
        "--fingerprint".into(),
        "--no-cli".into(),
        "--no-tlsv1".into(),
        "--no-tlsv1_1".into(),
        "--no-multicast-peers".into(),
    ];
    // Never relay into private address space (the cluster, the LAN).
    for range in [
        "0.0.0.0-0.255.255.255",
        "10.0.0.0-10.255.255.255",
        "100.64.0.0-100.127.255.255",
        "127.0.0.0-127.255.255.255",
        "169.254.0.0-169.254.255.255",
        "172.16.0.0-172.31.255.255",
        "192.168.0.0-192.168.255.255",
    ] {
        args.push(format!("--denied-peer-ip={range}"));
    }
    let c = Container {
        args: Some(args),
        env: Some(vec![
            env_secret("TURN_SECRET", TURN_AUTH, TURN_SECRET_KEY),
            env_field("EXTERNAL_IP", "status.hostIP"),
        ]),
        ports: Some(ports),
        resources: Some(resources(
            &ctx.t.sizing.resources_for(Component::Coturn, ctx.cfg),
        )),
        readiness_probe: Some(tcp_probe("turn-tcp", 5, 3)),
        liveness_probe: Some(tcp_probe("turn-tcp", 10, 6)),
        volume_mounts: Some(vec![mount("certs", "/certs"), mount_rw("tmp", "/tmp")]),
        ..container(reg::coturn::COMPONENT.name(), &ctx.cfg.images.coturn)
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
    let w = Workload::new(
        reg::coturn::COMPONENT.name(),
        reg::coturn::COMPONENT.name(),
        1,
        sel,
        pod,
    );
    out.add(Phase::Calls, file, w.deployment(ctx));
}

fn livekit(ctx: &Ctx, out: &mut Out) {
    let file = "livekit.yaml";
    let sel = map(&[(LABEL_NAME, reg::livekit::COMPONENT.name())]);
    let config = json!({
        "port": reg::livekit::HTTP.number,
        "rtc": {
            "tcp_port": LIVEKIT_RTC_TCP,
            "udp_port": LIVEKIT_RTC_UDP,
            // The node address is given on the command line; no STUN lookup on the internet.
            "use_external_ip": false,
        },
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
                service_port("rtc-tcp", LIVEKIT_RTC_TCP, "TCP"),
                service_port("rtc-udp", LIVEKIT_RTC_UDP, "UDP"),
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
            container_port("rtc-tcp", LIVEKIT_RTC_TCP, "TCP"),
            container_port("rtc-udp", LIVEKIT_RTC_UDP, "UDP"),
        ]),
        resources: Some(resources(
            &ctx.t.sizing.resources_for(Component::Livekit, ctx.cfg),
        )),
        readiness_probe: Some(http_probe("/", "http", 5, 3)),
        liveness_probe: Some(http_probe("/", "http", 10, 6)),
        volume_mounts: Some(vec![
            mount("config", "/etc/livekit"),
            mount_rw("tmp", "/tmp"),
        ]),
        ..container(reg::livekit::COMPONENT.name(), &ctx.cfg.images.livekit)
    };
    let pod = PodSpec {
        containers: vec![c],
        volumes: Some(vec![
            volume_config_map("config", "livekit-config"),
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
