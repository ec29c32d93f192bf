//! MatrixRTC for Element Call in the Kubernetes render (issue 20): the focus that
//! `.well-known/matrix/client` and Synapse announce, Element's config, the authorization
//! service's workload, route and policies, LiveKit's room and TURN settings, and no
//! call.element.io anywhere.

mod common;

use common::*;
use mxstack_spec::{Feature, IngressMode, SecretName, Tier};
use serde_json::{json, Value};

fn cm_data<'a>(r: &'a mxstack_k8s::Rendered, cm: &str, key: &str) -> &'a str {
    find(r, "ConfigMap", cm).unwrap()["data"][key]
        .as_str()
        .unwrap()
}

fn focus() -> Value {
    json!([{ "type": "livekit", "livekit_service_url": "https://livekit-jwt.acme.test" }])
}

#[test]
fn well_known_synapse_and_element_announce_our_focus_and_nothing_of_element_io() {
    let (r, _) = render(&config(Tier::T1k, &[Feature::Calls]));
    let client: Value = serde_json::from_str(cm_data(&r, "element-config", "client.json")).unwrap();
    assert_eq!(client["org.matrix.msc4143.rtc_foci"], focus());
    let cfg: Value = serde_json::from_str(cm_data(&r, "element-config", "config.json")).unwrap();
    assert_eq!(cfg["element_call"]["use_exclusively"], true);
    assert!(
        cfg["element_call"].get("url").is_none(),
        "Element serves its bundled Element Call; no url to point elsewhere"
    );
    assert_eq!(cfg["features"]["feature_group_calls"], true);
    let hs: Value =
        serde_saphyr::from_str(cm_data(&r, "synapse-config", "homeserver.yaml")).unwrap();
    assert_eq!(hs["matrix_rtc"]["transports"], focus());
    assert_eq!(
        hs["experimental_features"],
        json!({"msc3266_enabled": true, "msc4143_enabled": true, "msc4222_enabled": true})
    );
    assert_eq!(hs["max_event_delay_duration"], "24h");
    assert_eq!(hs["rc_delayed_event_mgmt"]["burst_count"], 20);
    // Without federation, main serves the openid resource the authorization service asks.
    let names = &hs["listeners"][0]["resources"][0]["names"];
    assert!(
        names.as_array().unwrap().contains(&json!("openid")),
        "{names}"
    );

    // Every feature set and ingress mode: nothing anywhere points at Element's hosted calls.
    for c in matrix() {
        let (r, _) = render(&c);
        for (path, text) in &r.files {
            assert!(!text.contains("call.element.io"), "{path}");
        }
    }
}

#[test]
fn without_calls_there_is_no_focus_no_service_and_no_call_settings() {
    let (r, _) = render(&config(Tier::T1k, &[]));
    let client: Value = serde_json::from_str(cm_data(&r, "element-config", "client.json")).unwrap();
    assert!(client.get("org.matrix.msc4143.rtc_foci").is_none());
    assert!(find(&r, "Deployment", "rtc-auth").is_none());
    let hs: Value =
        serde_saphyr::from_str(cm_data(&r, "synapse-config", "homeserver.yaml")).unwrap();
    assert!(hs.get("matrix_rtc").is_none() && hs.get("experimental_features").is_none());
    let names = &hs["listeners"][0]["resources"][0]["names"];
    assert!(!names.as_array().unwrap().contains(&json!("openid")));
}

#[test]
fn the_authorization_service_runs_from_our_image_with_the_livekit_keys_and_no_secret_in_its_config()
{
    let (r, secrets) = render(&config(Tier::T1k, &[Feature::Calls, Feature::Monitoring]));
    let text = cm_data(&r, "rtc-auth-config", "rtc-auth.yaml");
    let cfg = mxstack_service_config::rtc_auth::RtcAuthConfig::from_yaml(text).unwrap();
    assert_eq!(cfg.server_name, "acme.test");
    assert_eq!(cfg.livekit_url, "wss://livekit.acme.test");
    assert!(
        cfg.homeserver_url.starts_with("http://synapse-main."),
        "{}",
        cfg.homeserver_url
    );
    assert!(cfg
        .livekit_api_url
        .as_deref()
        .unwrap()
        .starts_with("http://livekit."));
    assert!(!text.contains(secrets.get(SecretName::LivekitApiSecret)));
    let d = find(&r, "Deployment", "rtc-auth").unwrap();
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["command"][2], "rtc-auth");
    let key_ref = &c["env"][0]["valueFrom"]["secretKeyRef"];
    assert_eq!(
        (&key_ref["name"], &key_ref["key"]),
        (&json!("livekit-keys"), &json!("keys"))
    );
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/healthz");
    assert!(find(&r, "ServiceMonitor", "rtc-auth").is_some());
}

#[test]
fn the_edge_routes_only_the_api_and_health_paths_in_both_modes() {
    let mut c = config(Tier::T1k, &[Feature::Calls]);
    let (r, _) = render(&c);
    let route = find(&r, "HTTPRoute", "livekit-jwt").unwrap();
    assert_eq!(route["spec"]["hostnames"], json!(["livekit-jwt.acme.test"]));
    let paths: Vec<&str> = route["spec"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["matches"][0]["path"]["value"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        ["/sfu/get", "/get_token", "/healthz"],
        "never /metrics"
    );
    assert!(find(&r, "Certificate", "tls-livekit-jwt").is_some());
    c.ingress.mode = IngressMode::Ingress;
    let (r, _) = render(&c);
    let ing = find(&r, "Ingress", "livekit-jwt").unwrap();
    let rule = &ing["spec"]["rules"][0];
    assert_eq!(rule["host"], "livekit-jwt.acme.test");
    assert_eq!(rule["http"]["paths"].as_array().unwrap().len(), 3);
    assert_eq!(
        rule["http"]["paths"][0]["backend"]["service"]["name"],
        "rtc-auth"
    );
}

#[test]
fn livekit_creates_no_rooms_by_itself_and_relays_through_our_coturn() {
    let (r, secrets) = render(&config(Tier::T1k, &[Feature::Calls]));
    let text = cm_data(&r, "livekit-config", "livekit.yaml");
    let lk: Value = serde_saphyr::from_str(text).unwrap();
    assert_eq!(lk["room"]["auto_create"], false);
    assert_eq!(lk["turn"]["enabled"], false);
    let turn = lk["rtc"]["turn_servers"].as_array().unwrap();
    assert_eq!(turn.len(), 2);
    for t in turn {
        assert_eq!(t["host"], "turn.acme.test");
        assert!(t["secret_file"]
            .as_str()
            .unwrap()
            .starts_with("/etc/livekit-turn/"));
    }
    assert!(!text.contains(secrets.get(SecretName::TurnSharedSecret)));
}
