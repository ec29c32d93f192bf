//! The MatrixRTC authorization service on one machine (feature `calls`): `mxstack serve
//! rtc-auth` with the config Kubernetes renders (`topology::rtc_auth::config`), the LiveKit keys
//! in its environment. No LiveKit runs here (its server is a Go binary that cannot be had), so
//! it creates no rooms; clients reach it directly on its port (`mxstack status`), as Element Call
//! reaches `livekit-jwt.<domain>` through the edge in a cluster.

use mxstack_topology::registry as reg;
use mxstack_topology::rtc_auth;
use mxstack_topology::synapse::to_yaml;

use crate::parts::{file, Out, Parts};
use crate::plan::serve_service;

/// Adds its config file and process.
pub(crate) fn part(c: &Parts, out: &mut Out) {
    let listen = c.addr.rtc_auth();
    let config = c.layout.root.join("rtc-auth").join(rtc_auth::CONFIG_FILE);
    out.files.push(file(
        config.clone(),
        to_yaml(&rtc_auth::config_value(
            c.t,
            c.addr,
            &listen.to_string(),
            None,
        )),
        0o644,
    ));
    let keys = rtc_auth::livekit_keys(c.secrets);
    out.services.push(serve_service(
        reg::rtc_auth::COMPONENT.name(),
        "rtc-auth",
        c.programs,
        &config,
        vec![(rtc_auth::ENV_KEYS.to_string(), keys)],
        listen.port,
        &[],
    ));
}
