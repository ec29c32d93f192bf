//! The CloudNativePG stand-in bootstraps the rendered main cluster for real: the synapse role
//! logs in with the password of the one Secret, li_replicator has REPLICATION, and the
//! database has the C collation Synapse requires.

mod common;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

use mxstack_kube_podman::cnpg_standin;
use mxstack_kube_podman::translate::Options;
use mxstack_kube_podman::{Cluster, Harness};
use mxstack_spec::{Feature, SecretName};

#[test]
fn the_standin_bootstraps_main_pg_as_rendered() {
    let lock = common::images(&["mxstack"]);
    let image = cnpg_standin::image(&lock.base.unwrap().reference).unwrap();
    let (_, objects, secrets) = common::rendered(&[Feature::Li]);
    let cluster = Cluster::from_objects("matrix", &objects).unwrap();
    let pg = cnpg_standin::clusters(&objects)
        .into_iter()
        .find(|c| c.name == "main-pg")
        .unwrap();
    let opts = Options {
        network: "rps-net".into(),
        dns: Ipv4Addr::new(10, 89, 78, 1),
        host_ip: Ipv4Addr::new(10, 89, 78, 1),
        work: "/var/tmp/mxstack-run-proof-smoke".into(),
        prefix: "rps-".into(),
        images: BTreeMap::new(),
        nofile: 1024,
    };
    let _work = common::RemoveOnDrop(opts.work.clone());
    let mut h = Harness::new(opts.clone(), Ipv4Addr::new(10, 89, 78, 0)).unwrap();
    let ip = Ipv4Addr::new(10, 89, 78, 5);
    let run = pg.pod(&cluster, ip, &image, "superuser-pw-for-test", &opts);
    h.start(&run).unwrap();
    h.wait_ready(&run, Duration::from_secs(120)).unwrap();
    let psql = |user: &str, pw: &str, sql: &str| {
        let out = Command::new("psql")
            .args([
                "-h",
                &ip.to_string(),
                "-U",
                user,
                "-d",
                "synapse",
                "-tAc",
                sql,
            ])
            .env("PGPASSWORD", pw)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
            + &String::from_utf8_lossy(&out.stderr)
    };
    // Ready on TCP may precede the bootstrap's end: wait for the role.
    let mut out = String::new();
    for _ in 0..60 {
        out = psql(
            "synapse",
            secrets.get(SecretName::SynapseDbPassword),
            "select current_user",
        );
        if out == "synapse" {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    assert_eq!(out, "synapse");
    assert_eq!(
        psql(
            "li_replicator",
            secrets.get(SecretName::LiReplicationPassword),
            "select rolreplication from pg_roles where rolname = current_user"
        ),
        "t"
    );
    assert_eq!(
        psql(
            "synapse",
            secrets.get(SecretName::SynapseDbPassword),
            "show lc_collate"
        ),
        "C"
    );
}
