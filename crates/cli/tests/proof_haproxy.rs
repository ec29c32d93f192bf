//! Proof 3: `haproxy -c` accepts every rendered HAProxy configuration (the router with its map
//! files, and the Valkey master endpoint), with the files materialised at their mount paths.

mod common;

use common::*;

fn prove(scale: &str, features: &str) -> usize {
    let (dir, out) = init_and_render("acme.test", scale, features, |_| {});
    let objs = objects(&out);
    let haproxy = tool("haproxy");
    let mut checked = 0;
    for (_, w) in objs
        .iter()
        .filter(|(_, o)| matches!(kind(o), "Deployment" | "StatefulSet"))
    {
        let c = &w["spec"]["template"]["spec"]["containers"][0];
        if !c["image"].as_str().unwrap_or("").contains("haproxy") {
            continue;
        }
        let root = dir.path().join(format!("root-{}", name(w)));
        let mounts = materialise(w, &objs, &root);
        let cfg = mounts
            .iter()
            .map(|m| format!("{m}/haproxy.cfg"))
            .find(|p| root.join(p.trim_start_matches('/')).exists())
            .unwrap_or_else(|| panic!("{}: no haproxy.cfg in its mounts {mounts:?}", name(w)));
        let res = run_in_mounts(
            &root,
            &mounts,
            &format!("'{}' -c -f '{cfg}'", haproxy.display()),
            &[("REDIS_PASSWORD", "not-a-real-password")],
        );
        assert!(
            res.status.success(),
            "{scale}/{features} {}: haproxy -c failed\n{}{}",
            name(w),
            String::from_utf8_lossy(&res.stdout),
            String::from_utf8_lossy(&res.stderr)
        );
        checked += 1;
    }
    assert!(
        checked >= 2,
        "expected the router and the Valkey master endpoint, checked {checked}"
    );
    checked
}

#[test]
fn haproxy_accepts_every_rendered_config() {
    for scale in ["100", "1k", "5k", "10k", "20k"] {
        prove(scale, "federation,li,antivirus,calls,push,monitoring");
    }
    prove("1k", "");
}
