//! escrow.rs with the Kubernetes addresses (moved out of the crate when the addressing moved to
//! mxstack-k8s).
use mxstack_k8s::KubernetesAddressing;
use mxstack_spec::{Config, Feature, Tier};
use mxstack_topology::escrow::*;
use mxstack_topology::Topology;

#[test]
fn module_config_and_route() {
    let c = Config::new("acme.test", Tier::T10k, [Feature::Li].into());
    let t = Topology::build(&c);
    let addr = KubernetesAddressing::new(&c);
    let m = synapse_module(&addr);
    assert_eq!(m["module"], ESCROW_MODULE);
    assert_eq!(
        m["config"]["vault_url"],
        "http://key-vault.matrix.svc.cluster.local:8092"
    );
    assert_eq!(
        m["config"]["api_key_path"],
        "/mxstack/secrets/key-vault/store_api_key"
    );
    let hs = mxstack_topology::synapse::homeserver_yaml(&t, &addr);
    assert!(hs["modules"].as_array().unwrap().contains(&m));
    // Only main serves the endpoint (only main has the key mounted): no worker route.
    let routes = mxstack_topology::routing::routes(&t);
    assert!(mxstack_topology::routing::pick(&routes, "POST", ESCROW_PATH).is_none());
    // The vault's config parses as the vault's own config type.
    let recipient = mxstack_spec::Secrets::generate_all()
        .unwrap()
        .key_vault_recipient()
        .unwrap();
    let vc = key_vault_config("0.0.0.0:8092", "/data/key-vault.sqlite3", &recipient, "pk");
    assert_eq!(vc["recipients"]["vault"], recipient.as_str());
    assert_ne!(vc["store_api_key_env"], vc["retrieval_api_key_env"]);
    // Without li there is no escrow module.
    let c = Config::new("acme.test", Tier::T10k, [Feature::Antivirus].into());
    let hs = mxstack_topology::synapse::homeserver_yaml(&Topology::build(&c), &addr);
    assert!(!hs["modules"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["module"] == ESCROW_MODULE));
}
