//! Rotating one secret changes the secrets-hash annotation of exactly the workloads whose
//! component reads it (so `deploy` rolls those and no other), and no annotation holds a value.

use std::collections::BTreeMap;

use mxstack_k8s::rollout::SECRETS_HASH;
use mxstack_spec::{Config, Feature, SecretName, Secrets, Tier};
use mxstack_topology::Topology;

/// `kind/name` -> the pod template's secrets hash.
fn hashes(t: &Topology, s: &Secrets) -> BTreeMap<String, String> {
    let r = mxstack_k8s::render(t, s);
    let mut out = BTreeMap::new();
    for o in r.objects {
        let v = o.value;
        let tpl = match v["kind"].as_str().unwrap_or("") {
            "CronJob" => &v["spec"]["jobTemplate"]["spec"]["template"],
            _ => &v["spec"]["template"],
        };
        if let Some(h) = tpl["metadata"]["annotations"][SECRETS_HASH].as_str() {
            out.insert(
                format!(
                    "{}/{}",
                    v["kind"].as_str().unwrap(),
                    v["metadata"]["name"].as_str().unwrap()
                ),
                h.to_string(),
            );
        }
    }
    out
}

fn changed_by(name: SecretName) -> Vec<String> {
    let config = Config::new("acme.test", Tier::T1k, Feature::ALL.into_iter().collect());
    let t = Topology::build(&config);
    let before = Secrets::generate_all().unwrap();
    let mut after = before.clone();
    after.replace_keeping_previous(name, "Rotated0Value0For0The0Test0Only0x");
    after.drop_previous(name);
    let (a, b) = (hashes(&t, &before), hashes(&t, &after));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (_, v) in before.values() {
        assert!(a.values().all(|h| !h.contains(v)));
    }
    a.iter()
        .filter(|(k, h)| b[*k] != **h)
        .map(|(k, _)| k.clone())
        .collect()
}

#[test]
fn turn_secret_rolls_coturn_livekit_and_every_synapse_workload_only() {
    let changed = changed_by(SecretName::TurnSharedSecret);
    assert!(changed.iter().any(|k| k.contains("coturn")), "{changed:?}");
    assert!(
        changed.iter().any(|k| k == "StatefulSet/synapse-main"),
        "{changed:?}"
    );
    for k in &changed {
        // LiveKit's embedded TURN configuration reads it too (the registry declares so).
        let reader = k.contains("coturn") || k.contains("livekit") || k.contains("/synapse-");
        assert!(reader, "{k} rolls too");
    }
    assert!(
        !changed.iter().any(|k| k.contains("synapse-li")),
        "{changed:?}"
    );
}

#[test]
fn form_secret_rolls_synapse_only_and_the_scanner_secret_the_scanner_only() {
    let changed = changed_by(SecretName::FormSecret);
    assert!(!changed.is_empty());
    assert!(
        changed
            .iter()
            .all(|k| k.contains("/synapse-") && !k.contains("synapse-li")),
        "{changed:?}"
    );
    let changed = changed_by(SecretName::ContentScannerRequestSecret);
    assert!(!changed.is_empty());
    assert!(
        changed.iter().all(|k| k.contains("content-scanner")),
        "{changed:?}"
    );
}

#[test]
fn key_vault_store_key_rolls_the_vault_and_synapse_main_not_the_workers() {
    let changed = changed_by(SecretName::KeyVaultStoreApiKey);
    assert!(
        changed.iter().any(|k| k.contains("key-vault")),
        "{changed:?}"
    );
    assert!(
        changed.iter().any(|k| k == "StatefulSet/synapse-main"),
        "{changed:?}"
    );
    assert!(
        !changed.iter().any(|k| k.contains("synapse-generic")),
        "{changed:?}"
    );
}

/// The workloads whose hash differs between two secret sets.
fn rolled(t: &Topology, before: &Secrets, after: &Secrets) -> Vec<String> {
    let (a, b) = (hashes(t, before), hashes(t, after));
    a.iter()
        .filter(|(k, h)| b[*k] != **h)
        .map(|(k, _)| k.clone())
        .collect()
}

/// The three secret sets of a Kubernetes rotation of `pairs` (name, new value): the new values
/// introduced (`next.`), switched to (`previous.` holds the old), the old retired.
fn three_steps(before: &Secrets, pairs: &[(SecretName, &str)]) -> [Secrets; 3] {
    let mut accept = before.clone();
    for (n, v) in pairs {
        accept.set_next(*n, v);
    }
    let mut switch = accept.clone();
    for (n, _) in pairs {
        assert!(switch.promote_next(*n));
    }
    let mut retire = switch.clone();
    for (n, _) in pairs {
        retire.drop_previous(*n);
    }
    [accept, switch, retire]
}

fn all_features() -> Topology {
    let config = Config::new("acme.test", Tier::T1k, Feature::ALL.into_iter().collect());
    Topology::build(&config)
}

/// The `stringData` of a rendered Secret, as text.
fn secret_text(t: &Topology, s: &Secrets, name: &str) -> String {
    mxstack_k8s::render(t, s)
        .objects
        .into_iter()
        .find(|o| o.value["kind"] == "Secret" && o.value["metadata"]["name"] == name)
        .map(|o| o.value["stringData"].to_string())
        .unwrap_or_else(|| panic!("Secret {name}"))
}

#[test]
fn s3_keys_roll_seaweedfs_with_both_pairs_then_the_readers_then_seaweedfs_alone() {
    let t = all_features();
    let before = Secrets::generate_all().unwrap();
    let old = before.get(SecretName::S3AccessKey);
    let [accept, switch, retire] = three_steps(
        &before,
        &[
            (SecretName::S3AccessKey, "ROTATEDACCESSKEY000A"),
            (
                SecretName::S3SecretKey,
                "Rotated0Value0For0The0Test0Only0xRotated0Value0F",
            ),
        ],
    );
    // 1: SeaweedFS alone, with both pairs.
    let first = rolled(&t, &before, &accept);
    assert!(
        first.contains(&"StatefulSet/seaweedfs-filer".to_string()),
        "{first:?}"
    );
    assert!(first.iter().all(|k| k.contains("seaweedfs")), "{first:?}");
    let text = secret_text(&t, &accept, "seaweedfs-s3-config");
    assert!(text.contains("ROTATEDACCESSKEY000A") && text.contains(old));
    // 2: every Synapse workload switches; SeaweedFS holds the same two pairs and stays.
    let second = rolled(&t, &accept, &switch);
    assert!(
        second.contains(&"StatefulSet/synapse-media".to_string()),
        "{second:?}"
    );
    assert!(
        second
            .iter()
            .all(|k| k.contains("/synapse-") && !k.contains("synapse-li")),
        "{second:?}"
    );
    // 3: SeaweedFS alone, with the new pair only.
    let third = rolled(&t, &switch, &retire);
    assert!(
        !third.is_empty() && third.iter().all(|k| k.contains("seaweedfs")),
        "{third:?}"
    );
    assert!(!secret_text(&t, &retire, "seaweedfs-s3-config").contains(old));
}

#[test]
fn the_key_vault_accepts_both_keys_before_main_and_the_console_switch() {
    let t = all_features();
    let before = Secrets::generate_all().unwrap();
    let [accept, switch, retire] = three_steps(
        &before,
        &[
            (
                SecretName::KeyVaultStoreApiKey,
                "RotatedStoreKey0For0The0Test0Only",
            ),
            (
                SecretName::KeyVaultRetrievalApiKey,
                "RotatedRetrievalKey0For0The0Test0",
            ),
        ],
    );
    assert_eq!(rolled(&t, &before, &accept), ["Deployment/key-vault"]);
    let text = secret_text(&t, &accept, "key-vault-api-key");
    assert!(
        text.contains("other_store_api_key") && text.contains("RotatedStoreKey0For0The0Test0Only")
    );
    assert_eq!(
        rolled(&t, &accept, &switch),
        ["Deployment/li-console", "StatefulSet/synapse-main"]
    );
    assert_eq!(rolled(&t, &switch, &retire), ["Deployment/key-vault"]);
    assert!(!secret_text(&t, &retire, "key-vault-api-key").contains("other_store_api_key"));
}

#[test]
fn li_s3_keys_roll_their_li_readers_and_seaweedfs_only() {
    let changed = changed_by(SecretName::LiS3AccessKey);
    assert!(
        changed.contains(&"Deployment/li-sync".to_string()),
        "{changed:?}"
    );
    assert!(
        changed
            .iter()
            .all(|k| k.contains("seaweedfs") || k == "Deployment/li-sync"),
        "{changed:?}"
    );
    let changed = changed_by(SecretName::LiBrowsingS3SecretKey);
    for k in ["Deployment/synapse-li", "Deployment/li-console"] {
        assert!(changed.contains(&k.to_string()), "{changed:?}");
    }
    assert!(
        !changed.iter().any(|k| k.contains("/synapse-main")),
        "{changed:?}"
    );
}

#[test]
fn li_passwords_roll_exactly_their_readers_and_the_gate_password_nothing() {
    assert_eq!(
        changed_by(SecretName::LiReplicationPassword),
        ["Deployment/li-sync"]
    );
    assert_eq!(changed_by(SecretName::LiDbPassword), ["Deployment/li-sync"]);
    assert_eq!(
        changed_by(SecretName::LiWorkingCopyDbPassword),
        ["Deployment/synapse-li"]
    );
    assert_eq!(
        changed_by(SecretName::LiConsoleDbPassword),
        ["Deployment/li-console"]
    );
    // The gateway re-reads the htpasswd Secret itself: no pod rolls.
    assert!(changed_by(SecretName::LiGatePassword).is_empty());
}

#[test]
fn livekit_keys_roll_livekit_and_rtc_auth_and_the_retrieval_key_the_vault_and_console() {
    assert_eq!(
        changed_by(SecretName::LivekitApiSecret),
        ["Deployment/livekit", "Deployment/rtc-auth"]
    );
    assert_eq!(
        changed_by(SecretName::KeyVaultRetrievalApiKey),
        ["Deployment/key-vault", "Deployment/li-console"]
    );
}

#[test]
fn livekit_accepts_the_new_pair_before_rtc_auth_signs_with_it() {
    let t = all_features();
    let before = Secrets::generate_all().unwrap();
    let [accept, switch, retire] = three_steps(
        &before,
        &[
            (SecretName::LivekitApiKey, "APIrotatedKey0001"),
            (
                SecretName::LivekitApiSecret,
                "Rotated0Value0For0The0Test0Only0xRotated0Value0F",
            ),
        ],
    );
    let old_line = format!("{}: ", before.get(SecretName::LivekitApiKey));
    let keys = |s: &Secrets| mxstack_topology::rtc_auth::livekit_keys(s);
    // 1: LiveKit takes both; rtc-auth (the first line signs) keeps the old pair.
    assert_eq!(rolled(&t, &before, &accept), ["Deployment/livekit"]);
    let k = keys(&accept);
    assert!(k.lines().next().unwrap().starts_with(&old_line));
    assert!(k.lines().nth(1).unwrap().starts_with("APIrotatedKey0001: "));
    // 2: rtc-auth signs with the new pair; LiveKit accepts the same two and stays.
    assert_eq!(rolled(&t, &accept, &switch), ["Deployment/rtc-auth"]);
    assert!(keys(&switch).starts_with("APIrotatedKey0001: "));
    // 3: LiveKit with the new pair only.
    assert_eq!(rolled(&t, &switch, &retire), ["Deployment/livekit"]);
    assert_eq!(keys(&retire).lines().count(), 1);
}
