//! li_browsing.rs with the Kubernetes addresses (moved out of the crate when the addressing moved to
//! mxstack-k8s).
use mxstack_k8s::KubernetesAddressing;
use mxstack_spec::{Config, Feature, Tier};
use mxstack_topology::li::WORKING_COPY_DATABASE;
use mxstack_topology::li_browsing::*;
use mxstack_topology::{SynapsePaths, Topology};
use serde_json::{json, Value};

fn li_config() -> (Topology, Value) {
    let config = Config::new(
        "acme.test",
        Tier::T1k,
        [Feature::Li, Feature::Federation].into_iter().collect(),
    );
    let t = Topology::build(&config);
    let addr = KubernetesAddressing::new(&config);
    let hs = homeserver_yaml(&t, &addr, 8008, &SynapsePaths::under("/mxstack"));
    (t, hs)
}

#[test]
fn talks_to_nobody_and_keeps_everything() {
    // Federation is on for main; Synapse LI still federates with nobody.
    let (_, hs) = li_config();
    let resources = &hs["listeners"][0]["resources"][0]["names"];
    assert_eq!(resources, &json!(["client", "media"]));
    assert_eq!(hs["listeners"].as_array().unwrap().len(), 1);
    assert_eq!(hs["federation_domain_whitelist"], json!([]));
    assert_eq!(hs["trusted_key_servers"], json!([]));
    assert_eq!(hs["enable_registration"], false);
    assert!(hs.get("registration_shared_secret_path").is_none());
    assert_eq!(hs["url_preview_enabled"], false);
    assert_eq!(hs["push"]["enabled"], false);
    for k in [
        "redaction_retention_period",
        "forgotten_room_retention_period",
    ] {
        assert!(hs.get(k).is_some_and(Value::is_null), "{k} must be null");
    }
}

#[test]
fn same_server_reads_the_working_copy_and_the_li_bucket() {
    let (t, hs) = li_config();
    assert_eq!(hs["server_name"], "acme.test");
    assert_eq!(hs["public_baseurl"], "https://matrix-li.acme.test/");
    assert_eq!(
        hs["signing_key_path"],
        "/mxstack/secrets/synapse/signing.key"
    );
    let db = &hs["database"]["args"];
    assert_eq!(db["dbname"], WORKING_COPY_DATABASE);
    assert_ne!(
        db["dbname"],
        mxstack_topology::li::LI_DATABASE,
        "never the replica"
    );
    assert_eq!(db["user"], WORKING_COPY_ROLE);
    assert_eq!(db["host"], "li-pg-rw.matrix.svc.cluster.local");
    let s3 = &hs["media_storage_providers"][0];
    assert_eq!(s3["config"]["bucket"], "synapse-media-li");
    assert_eq!(
        s3["config"]["bucket"].as_str().unwrap(),
        t.config.li.media_bucket(&t.config.media)
    );
    for k in ["store_local", "store_remote", "store_synchronous"] {
        assert_eq!(s3[k], false, "{k}: the LI bucket is read-only here");
    }
    // No secret value or secret option inline.
    for k in [
        "macaroon_secret_key",
        "form_secret",
        "registration_shared_secret",
    ] {
        assert!(hs.get(k).is_none(), "{k}");
    }
}

#[test]
fn node_labels_parse_like_kubernetes_labels() {
    assert_eq!(
        node_label("mxstack.io/role=li"),
        Some(("mxstack.io/role", "li"))
    );
    assert_eq!(
        node_label("lawful-intercept="),
        Some(("lawful-intercept", ""))
    );
    for bad in [
        "role",
        "=li",
        "role=l i",
        "Mx.io/role=li",
        "role=-li",
        "a/b/c=d",
    ] {
        assert_eq!(node_label(bad), None, "{bad}");
    }
}

#[test]
fn request_log_stays_on() {
    let log = log_yaml();
    assert_eq!(log["loggers"]["synapse.access"]["level"], "INFO");
    assert_eq!(log["root"]["handlers"][0], "console");
}

#[test]
fn banner_carries_the_brand() {
    let b = banner_html();
    assert!(b.contains(BRAND) && b.contains("position:fixed"), "{b}");
    assert!(
        !b.contains('\''),
        "the banner is quoted with ' in nginx: {b}"
    );
    assert_eq!(element_theme()["name"], THEME_NAME);
}
