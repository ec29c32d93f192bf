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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use mxstack_spec::{Config, Feature, Secrets, Tier};
    use mxstack_topology::rtc_auth;

    use crate::layout::StateLayout;
    use crate::parts::Readiness;
    use crate::plan::LocalPlan;
    use crate::programs::Programs;

    #[test]
    fn calls_run_rtc_auth_against_main_with_the_livekit_keys_as_a_secret_env() {
        let config = Config::new("acme.test", Tier::T1k, [Feature::Calls].into());
        let secrets = Secrets::generate_all().unwrap();
        let layout = StateLayout::for_config(Path::new("/srv/mx/mxstack.yaml"), None);
        let programs = Programs::at_debian_paths();
        let plan = LocalPlan::build(
            &config,
            &secrets,
            &layout,
            &crate::Shape::new(20000, 1),
            &programs,
        );
        let s = plan.service("rtc-auth").expect("rtc-auth runs with calls");
        assert_eq!(s.args[..2], ["serve".to_string(), "rtc-auth".to_string()]);
        let port = plan.addressing.rtc_auth().port;
        assert!(
            matches!(&s.readiness, Readiness::Http { port: p, path } if *p == port && path == "/healthz")
        );
        assert_eq!(s.secret_env, [rtc_auth::ENV_KEYS]);
        assert_eq!(s.env[0].1, rtc_auth::livekit_keys(&secrets));
        let file = plan
            .files
            .iter()
            .find(|f| f.path == Path::new(&s.args[3]))
            .expect("rtc-auth.yaml");
        // The topology's config, with main's local HTTP address and no LiveKit API.
        let expected = rtc_auth::config(
            &plan.topology,
            &plan.addressing,
            &format!("127.0.0.1:{port}"),
            None,
        );
        assert_eq!(expected.livekit_api_url, None, "no LiveKit runs locally");
        let main = plan.topology.processes()[0].clone();
        let main_port = mxstack_topology::Addressing::http(&plan.addressing, &main).port;
        assert_eq!(
            expected.homeserver_url,
            format!("http://127.0.0.1:{main_port}")
        );
        assert_eq!(
            file.content,
            mxstack_topology::synapse::to_yaml(&serde_json::to_value(&expected).unwrap())
        );
        for (_, value) in secrets.values() {
            assert!(!file.content.contains(value));
        }
        let without = Config::new("acme.test", Tier::T1k, [].into());
        let plan = LocalPlan::build(
            &without,
            &secrets,
            &layout,
            &crate::Shape::new(20000, 1),
            &programs,
        );
        assert!(plan.service("rtc-auth").is_none());
    }
}
