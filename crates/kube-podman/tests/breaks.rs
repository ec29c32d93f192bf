//! Issue 18: a break in a manifest that only running it shows must fail the run-proof. Here the
//! key vault's config is mounted unreadable for its user (mode 0400, owned by root, no fsGroup):
//! a schema check passes it, the kubelet would start it, and the pod never becomes ready. The
//! unbroken pod, run the same way, becomes ready.

mod common;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use mxstack_kube_podman::proof::{Proof, ProofError, ProofOptions};
use mxstack_kube_podman::{cnpg_standin, RunError};
use mxstack_spec::Feature;
use serde_json::{json, Value};

fn options(lock: &mxstack_images::Lock, c: &mxstack_spec::Config, n: u8) -> ProofOptions {
    let base = &lock.base.as_ref().expect("a base").reference;
    ProofOptions {
        namespace: c.namespace.clone(),
        subnet: Ipv4Addr::new(10, 89, n, 0),
        network: format!("rpb{n}-net"),
        work: PathBuf::from(format!("/var/tmp/mxstack-run-proof-break-{n}")),
        prefix: format!("rpb{n}-"),
        images: mxstack_kube_podman::proof::images_from_lock(&c.images, lock),
        postgres_image: cnpg_standin::image(base).unwrap(),
        waves: vec![vec!["key-vault".into()]],
        wave_limit: Duration::from_secs(60),
        seed_claims: Default::default(),
    }
}

fn break_key_vault_config(objects: &mut [Value]) {
    let d = objects
        .iter_mut()
        .find(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == "key-vault")
        .unwrap();
    let spec = &mut d["spec"]["template"]["spec"];
    spec["securityContext"]
        .as_object_mut()
        .unwrap()
        .remove("fsGroup");
    for v in spec["volumes"].as_array_mut().unwrap() {
        if v.get("configMap").is_some() {
            v["configMap"]["defaultMode"] = json!(0o400);
        }
    }
}

#[test]
fn an_unreadable_config_mount_fails_the_proof_and_the_rendered_one_passes() {
    let lock = common::images(&["mxstack"]);
    let (c, mut objects, _) = common::rendered(&[Feature::Li]);
    let _work = common::RemoveOnDrop(options(&lock, &c, 93).work);
    {
        let proof = Proof::up(&objects, &options(&lock, &c, 93), &|s| eprintln!("{s}"));
        assert!(proof.is_ok(), "the rendered key vault: {:?}", proof.err());
    }
    break_key_vault_config(&mut objects);
    match Proof::up(&objects, &options(&lock, &c, 93), &|s| eprintln!("{s}")) {
        Err(ProofError::Run(RunError::NotReady { container, log, .. })) => {
            assert!(container.ends_with("key-vault-0-key-vault"), "{container}");
            assert!(log.to_lowercase().contains("permission denied"), "{log}");
        }
        Err(e) => panic!("failed otherwise: {e}"),
        Ok(_) => panic!("the broken key vault became ready"),
    }
}
