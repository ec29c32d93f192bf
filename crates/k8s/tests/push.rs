//! Issue 20 (push): Sygnal's apps come from `push.apps`, each app's credential from secrets.yaml
//! into the Secret `sygnal-credentials` only, mounted where Sygnal's config names it; a missing
//! credential refuses the render (MX-OUT-020).

mod common;

use common::*;
use mxstack_spec::{Config, Feature, PushApp, PushAppKind, Secrets, Tier};
use mxstack_topology::Topology;
use serde_json::Value;

fn push_config() -> Config {
    let mut c = config(Tier::T1k, &[Feature::Push]);
    c.push.gateway_ip_ranges = vec!["10.96.0.0/12".into()];
    let app = |id: &str, kind| PushApp {
        id: id.into(),
        kind,
        platform: None,
        topic: None,
        team_id: None,
        key_id: None,
        project_id: None,
    };
    c.push.apps = vec![
        PushApp {
            topic: Some("im.acme".into()),
            team_id: Some("TEAM123456".into()),
            key_id: Some("KEY1234567".into()),
            ..app("im.acme.ios", PushAppKind::Apns)
        },
        PushApp {
            project_id: Some("acme-app".into()),
            ..app("im.acme.android", PushAppKind::Fcm)
        },
    ];
    c
}

const P8: &str = "-----BEGIN PRIVATE KEY-----\nMIGTAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBHkwdwIBAQQgk3y\n-----END PRIVATE KEY-----\n";
const SERVICE_ACCOUNT: &str = r#"{"type": "service_account", "private_key": "k-0f3a9c"}"#;

fn objects(c: &Config, secrets: &Secrets) -> Vec<Value> {
    mxstack_k8s::render(&Topology::build(c), secrets)
        .objects
        .into_iter()
        .map(|o| o.value)
        .collect()
}

#[test]
fn credentials_live_in_the_secret_sygnal_mounts_and_nowhere_else() {
    let c = push_config();
    let mut secrets = Secrets::generate_all().unwrap();
    secrets.supply("push_credential.im.acme.ios", P8);
    secrets.supply("push_credential.im.acme.android", SERVICE_ACCOUNT);
    let objs = objects(&c, &secrets);
    let findings = mxstack_checks::rendered::check(&objs, Some(&secrets));
    assert!(
        findings.iter().all(|f| !f.is_error()),
        "{:?}",
        findings.iter().map(|f| &f.message).collect::<Vec<_>>()
    );

    let get = |k: &str, n: &str| objs.iter().find(|o| kind(o) == k && name(o) == n).unwrap();
    let secret = get("Secret", "sygnal-credentials");
    assert_eq!(secret["stringData"]["im.acme.ios.p8"], P8);
    assert_eq!(
        secret["stringData"]["im.acme.android.json"],
        SERVICE_ACCOUNT
    );
    let sygnal: Value = serde_saphyr::from_str(
        get("ConfigMap", "sygnal-config")["data"]["sygnal.yaml"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        sygnal["apps"]["im.acme.ios"]["keyfile"],
        "/sygnal/credentials/im.acme.ios.p8"
    );
    assert_eq!(sygnal["apps"]["im.acme.android"]["type"], "gcm");
    // Only the Secret holds a credential.
    for o in objs
        .iter()
        .filter(|o| !(kind(o) == "Secret" && name(o) == "sygnal-credentials"))
    {
        let text = serde_json::to_string(o).unwrap();
        assert!(
            !text.contains("MIGTAgEAMBMG") && !text.contains("k-0f3a9c"),
            "{}/{}",
            kind(o),
            name(o)
        );
    }
    let pod = &get("Deployment", "sygnal")["spec"]["template"]["spec"];
    assert!(pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v["secret"]["secretName"] == "sygnal-credentials"));

    // Synapse: the allowlist module with the gateway URL, the gateway's range and no more.
    let hs: Value = serde_saphyr::from_str(
        get("ConfigMap", "synapse-config")["data"]["homeserver.yaml"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let module = hs["modules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["module"] == "mxstack_synapse.push.PushGatewayAllowlist")
        .unwrap();
    assert_eq!(
        module["config"]["gateway_urls"][0],
        "http://sygnal.matrix.svc.cluster.local:5000/_matrix/push/v1/notify"
    );
    assert_eq!(
        hs["ip_range_whitelist"],
        serde_json::json!(["10.96.0.0/12"])
    );
    assert!(
        hs.get("ip_range_blacklist").is_none(),
        "Synapse's default stays"
    );
}

#[test]
fn a_missing_credential_refuses_the_render() {
    let c = push_config();
    let mut secrets = Secrets::generate_all().unwrap();
    secrets.supply("push_credential.im.acme.ios", P8);
    let objs = objects(&c, &secrets);
    let f: Vec<_> = mxstack_checks::rendered::check(&objs, Some(&secrets))
        .into_iter()
        .filter(|f| f.rule == "MX-OUT-020")
        .collect();
    assert_eq!(f.len(), 1, "{f:?}");
    assert!(f[0].message.contains("im.acme.android"), "{}", f[0].message);
    assert!(f[0].is_error());
}

#[test]
fn without_apps_there_is_no_credentials_secret() {
    let mut c = push_config();
    c.push.apps.clear();
    let objs = objects(&c, &Secrets::generate_all().unwrap());
    assert!(!objs
        .iter()
        .any(|o| kind(o) == "Secret" && name(o) == "sygnal-credentials"));
    assert!(objs
        .iter()
        .any(|o| kind(o) == "Deployment" && name(o) == "sygnal"));
}
