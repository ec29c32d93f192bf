//! The Synapse router: HAProxy with the path maps generated from the topology's endpoint table.
//! At least two replicas behind one Service (seed 004 issue 2.2).

use k8s_openapi::api::core::v1::{Container, PodSpec};
use mxstack_spec::{Component, Feature};
use mxstack_topology::haproxy::{self, Resolution};
use mxstack_topology::registry as reg;

use crate::meta::*;
use crate::valkey::HAPROXY_UID;
use crate::{Ctx, Out, Phase};

const FILE: &str = "synapse-router.yaml";
pub const CONFIG_DIR: &str = "/usr/local/etc/haproxy";

pub fn selector() -> Labels {
    map(&[(LABEL_NAME, reg::router::COMPONENT.name())])
}

pub fn render(ctx: &Ctx, out: &mut Out) {
    let files = haproxy::router(ctx.t, &ctx.addr, Resolution::Dns, CONFIG_DIR);
    let contents: Vec<&str> = files.files().iter().map(|(_, c)| *c).collect();
    let hash = config_hash(&contents);
    out.add(
        Phase::Main,
        FILE,
        config_map(
            ctx,
            reg::router::COMPONENT.name(),
            reg::router::COMPONENT.name(),
            map(&files.files()),
        ),
    );
    let sel = selector();
    let mut svc = service(
        ctx,
        reg::router::COMPONENT.name(),
        reg::router::COMPONENT.name(),
        &sel,
        vec![
            service_port_of(reg::router::HTTP),
            service_port_of(reg::router::STATS),
        ],
        false,
    );
    if ctx.has(Feature::Monitoring) {
        label_for_scraping(&mut svc, reg::router::COMPONENT.name());
    }
    out.add(Phase::Main, FILE, svc);
    let c = Container {
        ports: Some(vec![
            container_port_of(reg::router::HTTP),
            container_port_of(reg::router::STATS),
        ]),
        resources: Some(resources(
            &ctx.t.sizing.resources_for(Component::Haproxy, ctx.cfg),
        )),
        readiness_probe: Some(ready_probe(&reg::router::COMPONENT, 5, 3)),
        liveness_probe: Some(live_probe(&reg::router::COMPONENT, 10, 6)),
        volume_mounts: Some(vec![mount("config", CONFIG_DIR), mount_rw("tmp", "/tmp")]),
        ..container("haproxy", &ctx.cfg.images.haproxy)
    };
    let pod = PodSpec {
        containers: vec![c],
        volumes: Some(vec![
            volume_config_map("config", reg::router::COMPONENT.name()),
            volume_empty("tmp"),
        ]),
        security_context: Some(pod_security(HAPROXY_UID)),
        affinity: Some(spread(&sel)),
        automount_service_account_token: Some(false),
        ..Default::default()
    };
    let replicas = ctx.t.sizing.haproxy_replicas.max(2);
    let mut w = Workload::new(
        reg::router::COMPONENT.name(),
        reg::router::COMPONENT.name(),
        replicas,
        sel,
        pod,
    );
    w.config_hash = Some(hash);
    out.add(Phase::Main, FILE, w.deployment(ctx));
    out.add(Phase::Main, FILE, w.pdb(ctx));
}
