//! Issue 17: the config files of mxstack's own services, as both targets write them from the
//! topology, read back into the types the services read (`mxstack-service-config`, unknown
//! fields refused), for every tier with every feature and both LI sync modes. Each file written
//! back from what was read is the same text: nothing the writer wrote was dropped, defaulted or
//! reordered on the way.

use std::collections::BTreeSet;
use std::path::Path;

use mxstack_local::plan::Programs;
use mxstack_local::{LocalPlan, StateLayout};
use mxstack_service_config::content_scanner::ScannerConfig;
use mxstack_service_config::key_vault::{Database as VaultDatabase, VaultConfig};
use mxstack_service_config::li_console::ConsoleConfig;
use mxstack_service_config::li_sync::{LiSyncConfig, SyncMode};
use mxstack_spec::{Config, Feature, LiSyncMode, Secrets, Tier};
use mxstack_topology::Topology;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// One site's four files, as one target wrote them.
struct Files {
    target: String,
    scanner: Option<String>,
    li_sync: String,
    key_vault: String,
    li_console: String,
}

fn kubernetes(c: &Config, secrets: &Secrets) -> Files {
    let r = mxstack_k8s::render(&Topology::build(c), secrets);
    let data = |name: &str, key: &str| {
        r.objects
            .iter()
            .find(|o| o.value["kind"] == "ConfigMap" && o.value["metadata"]["name"] == name)
            .map(|o| {
                o.value["data"][key]
                    .as_str()
                    .unwrap_or_else(|| panic!("ConfigMap {name} has no {key}"))
                    .to_string()
            })
    };
    Files {
        target: format!("kubernetes {}", c.scale.as_str()),
        scanner: data("content-scanner-config", "scanner.yaml"),
        li_sync: data("li-sync-config", "li-sync.yaml").expect("li-sync-config"),
        key_vault: data("key-vault-config", "key-vault.yaml").expect("key-vault-config"),
        li_console: data("li-console-config", "li-console.yaml").expect("li-console-config"),
    }
}

fn local(c: &Config, secrets: &Secrets) -> Files {
    let layout = StateLayout::for_config(Path::new("/srv/site/mxstack.yaml"), None);
    let plan = LocalPlan::build(
        c,
        secrets,
        &layout,
        &mxstack_local::Shape::new(20000, 1),
        &Programs::at_debian_paths(),
    );
    let file = |ends_with: &str| {
        plan.files
            .iter()
            .find(|f| f.path.ends_with(ends_with))
            .map(|f| f.content.clone())
    };
    Files {
        target: format!("local {}", c.scale.as_str()),
        scanner: file("content-scanner/scanner.yaml"),
        li_sync: file("li-sync/li-sync.yaml").expect("li-sync.yaml"),
        key_vault: file("key-vault/key-vault.yaml").expect("key-vault.yaml"),
        li_console: file("li-console/li-console.yaml").expect("li-console.yaml"),
    }
}

/// Reads a file the way its service does, and checks the value writes back to the same text.
fn read_back<T: DeserializeOwned + Serialize>(what: &str, text: &str) -> T {
    let typed: T = serde_saphyr::from_str(text)
        .unwrap_or_else(|e| panic!("{what}: the service would refuse it: {e}\n{text}"));
    let again = serde_saphyr::to_string(&typed).unwrap();
    assert_eq!(again, text, "{what}: read and written back, it changed");
    typed
}

fn check(files: &Files, c: &Config) {
    let what = |file: &str| format!("{} {file}", files.target);
    let local = files.target.starts_with("local");

    match &files.scanner {
        Some(text) => {
            let s: ScannerConfig = read_back(&what("scanner.yaml"), text);
            s.validate()
                .unwrap_or_else(|e| panic!("{}: {e}", what("scanner.yaml")));
        }
        None => assert!(
            !c.has(Feature::Antivirus),
            "{}: no scanner config",
            files.target
        ),
    }

    let s: LiSyncConfig = read_back(&what("li-sync.yaml"), &files.li_sync);
    let dump = c.li.sync == LiSyncMode::Dump;
    assert_eq!(s.mode == SyncMode::Dump, dump, "{}", what("li-sync.yaml"));
    // Only the local runner schedules dumps itself; on Kubernetes a CronJob does.
    assert_eq!(
        s.dump_interval_secs.is_some(),
        dump && local,
        "{}",
        what("li-sync.yaml")
    );
    assert!(s.media.is_some() && s.working_copy.is_some());

    let v: VaultConfig = read_back(&what("key-vault.yaml"), &files.key_vault);
    assert!(matches!(v.database, VaultDatabase::Sqlite(_)));
    assert!(
        v.recipients.vault.starts_with("age1"),
        "{}",
        what("key-vault.yaml")
    );
    assert!(v.warrant_signer.is_some_and(|k| !k.is_empty()));
    assert_ne!(v.store_api_key_env, v.retrieval_api_key_env);

    let l: ConsoleConfig = read_back(&what("li-console.yaml"), &files.li_console);
    assert_eq!(l.clamd.is_some(), c.has(Feature::Antivirus));
    assert_eq!(l.secure_cookies, !local, "{}", what("li-console.yaml"));
    assert!(l.media.is_some() && l.metrics_listen.is_some());
}

#[test]
fn every_service_reads_what_both_targets_write() {
    let secrets = Secrets::generate_all().unwrap();
    let all: BTreeSet<Feature> = Feature::ALL.into();
    // Without antivirus: the console's clamd setting is left out, and there is no scanner.
    let li_only: BTreeSet<Feature> = [Feature::Li].into();
    for tier in Tier::ALL {
        for features in [&all, &li_only] {
            for sync in [LiSyncMode::Logical, LiSyncMode::Dump] {
                let mut c = Config::new("acme.test", tier, features.clone());
                c.li.sync = sync;
                check(&kubernetes(&c, &secrets), &c);
                check(&local(&c, &secrets), &c);
            }
        }
    }
}
