//! Push notifications (feature `push`): the Synapse module that holds pushers to the one configured
//! gateway URL, Synapse's outbound allowance for that gateway's addresses, and Sygnal's config.
//! The module is `python/mxstack_synapse/push.py`; docs/PUSH.md describes the whole path.

use mxstack_spec::{ApnsPlatform, Config, PushAppKind};
use serde_json::{json, Map, Value};

/// The module class Synapse loads (homeserver.yaml `modules:`), on every process: main refuses
/// other URLs at `POST /pushers/set`, pusher workers refuse to start a pusher stored with one.
pub const ALLOWLIST_MODULE: &str = "mxstack_synapse.push.PushGatewayAllowlist";

/// The module's entry in homeserver.yaml `modules:`.
pub fn synapse_module(config: &Config) -> Value {
    json!({
        "module": ALLOWLIST_MODULE,
        "config": { "gateway_urls": [config.push_gateway_url()] },
    })
}

/// Synapse's `ip_range_whitelist`: the gateway's own addresses when they are private (Synapse's
/// default `ip_range_blacklist` stays as it is). None when nothing needs allowing.
pub fn ip_range_whitelist(config: &Config) -> Option<Value> {
    (!config.push.gateway_ip_ranges.is_empty()).then(|| json!(config.push.gateway_ip_ranges))
}

/// Sygnal's `apps:` section: one pushkin per configured app, its credential read from
/// `credentials_dir/<file>` (a Secret's mount; the ConfigMap names the file, never its content).
pub fn sygnal_apps(config: &Config, credentials_dir: &str) -> Value {
    let mut apps = Map::new();
    for app in &config.push.apps {
        let file = format!("{credentials_dir}/{}", app.credential_file());
        let entry = match app.kind {
            PushAppKind::Apns => json!({
                "type": "apns",
                "keyfile": file,
                "key_id": app.key_id,
                "team_id": app.team_id,
                "topic": app.topic,
                "platform": match app.platform.unwrap_or(ApnsPlatform::Production) {
                    ApnsPlatform::Production => "production",
                    ApnsPlatform::Sandbox => "sandbox",
                },
            }),
            PushAppKind::Fcm => json!({
                "type": "gcm",
                "api_version": "v1",
                "project_id": app.project_id,
                "service_account_file": file,
            }),
        };
        apps.insert(app.id.clone(), entry);
    }
    Value::Object(apps)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        let yaml = format!(
            "domain: acme.test\nscale: 1k\nfeatures: [push]\nnamespace: chat\ntls:\n  acme_email: ops@acme.test\n{extra}"
        );
        Config::from_yaml("m.yaml", &yaml).unwrap().0
    }

    #[test]
    fn default_gateway_is_our_sygnal_in_the_cluster() {
        let c = config("");
        assert_eq!(
            synapse_module(&c)["config"]["gateway_urls"],
            json!(["http://sygnal.chat.svc.cluster.local:5000/_matrix/push/v1/notify"])
        );
        assert_eq!(ip_range_whitelist(&c), None);
    }

    #[test]
    fn apps_become_pushkins_with_credential_files() {
        let c = config(
            "push:\n  gateway_ip_ranges: [10.96.0.0/12]\n  apps:\n    - {id: im.acme.ios, type: apns, topic: im.acme, team_id: T1, key_id: K1, platform: sandbox}\n    - {id: im.acme.android, type: fcm, project_id: acme-app}\n",
        );
        let apps = sygnal_apps(&c, "/creds");
        assert_eq!(apps["im.acme.ios"]["keyfile"], "/creds/im.acme.ios.p8");
        assert_eq!(apps["im.acme.ios"]["platform"], "sandbox");
        assert_eq!(apps["im.acme.android"]["type"], "gcm");
        assert_eq!(apps["im.acme.android"]["api_version"], "v1");
        assert_eq!(
            apps["im.acme.android"]["service_account_file"],
            "/creds/im.acme.android.json"
        );
        assert_eq!(ip_range_whitelist(&c), Some(json!(["10.96.0.0/12"])));
    }
}
