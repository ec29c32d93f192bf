//! The serialization contract of the shared types, independent of the topology: unset optional
//! fields are left out of the file (never `null`), the readers' defaults fill what a file leaves
//! out, unknown fields are refused, and what is written reads back unchanged.

use std::path::PathBuf;

use mxstack_service_config::content_scanner::ScannerConfig;
use mxstack_service_config::key_vault::{Database as VaultDatabase, Recipients, VaultConfig};
use mxstack_service_config::li_console::{ConsoleConfig, KeyVault, Media, Replica};
use mxstack_service_config::li_sync::{Database, LiSyncConfig, Subscription, SyncMode};

fn round_trip<T>(value: &T) -> String
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let text = serde_saphyr::to_string(value).unwrap();
    assert!(
        !text.contains("null"),
        "an unset field was written:\n{text}"
    );
    let back: T = serde_saphyr::from_str(&text).unwrap();
    assert_eq!(&back, value);
    text
}

fn db(name: &str) -> Database {
    Database {
        host: "127.0.0.1".into(),
        port: 5432,
        dbname: name.into(),
        user: name.into(),
        password_env: "PW".into(),
    }
}

#[test]
fn li_sync_leaves_unset_options_out() {
    let c = LiSyncConfig {
        listen: "127.0.0.1:8091".into(),
        mode: SyncMode::Dump,
        main: db("synapse"),
        replica: db("synapse_li"),
        subscription: Subscription {
            name: "s".into(),
            publication: "p".into(),
            main_host: "127.0.0.1".into(),
            main_port: 5432,
        },
        media: None,
        schema_check_interval_secs: 5,
        status_interval_secs: 1,
        dump_interval_secs: None,
        working_copy: None,
    };
    let text = round_trip(&c);
    assert!(text.contains("mode: dump"));
    for absent in ["media", "dump_interval_secs", "working_copy"] {
        assert!(!text.contains(absent), "{absent} written:\n{text}");
    }
}

#[test]
fn key_vault_database_forms_and_options() {
    let mut c = VaultConfig {
        listen: "127.0.0.1:8092".into(),
        database: VaultDatabase::Sqlite("/data/kv.sqlite3".into()),
        recipients: Recipients {
            vault: "age1x".into(),
            break_glass: None,
        },
        store_api_key_env: "S".into(),
        retrieval_api_key_env: "R".into(),
        warrant_signer: None,
    };
    let text = round_trip(&c);
    assert!(text.contains("sqlite: /data/kv.sqlite3"));
    assert!(!text.contains("break_glass") && !text.contains("warrant_signer"));
    c.warrant_signer = Some("pk".into());
    c.recipients.break_glass = Some("age1y".into());
    round_trip(&c);
}

#[test]
fn defaults_fill_what_a_file_leaves_out() {
    let scanner: ScannerConfig = serde_saphyr::from_str(
        "listen: 0.0.0.0:8090\nupstreams: [\"http://media:8083\"]\nclamd: clamav:3310\n\
         max_file_bytes: 100\nmemory_buffer_bytes: 10\nclamd_connections: 1\n\
         scan_timeout_secs: 5\nverdict_cache_entries: 10\nrequest_secret_path: /s\n",
    )
    .unwrap();
    assert_eq!(scanner.memory_budget_bytes, 48 << 20);
    assert_eq!(scanner.request_secret_path, PathBuf::from("/s"));
    scanner.validate().unwrap();

    let console: ConsoleConfig = serde_saphyr::from_str(
        "listen: 0.0.0.0:8093\ndatabase: /data/c.sqlite3\nserver_name: acme.test\n\
         replica: {host: db, port: 5432, dbname: li, user: c, password_env: P}\n\
         key_vault: {url: \"http://kv:8092\", retrieval_api_key_env: R}\n\
         vault_identity_env: V\nsigning_key_env: K\n\
         media: {endpoint: \"http://s3:8333\", bucket: b, access_key_env: A, secret_key_env: S}\n",
    )
    .unwrap();
    assert!(console.secure_cookies);
    assert_eq!(console.media.as_ref().unwrap().region, "us-east-1");
    assert_eq!(console.clamd, None);
    let text = round_trip(&console);
    assert!(!text.contains("clamd") && !text.contains("metrics_listen"));
}

#[test]
fn unknown_fields_are_refused() {
    let console = ConsoleConfig {
        listen: "l".into(),
        database: "/d".into(),
        server_name: "s".into(),
        replica: Replica {
            host: "h".into(),
            port: 1,
            dbname: "d".into(),
            user: "u".into(),
            password_env: "P".into(),
        },
        key_vault: KeyVault {
            url: "http://kv".into(),
            retrieval_api_key_env: "R".into(),
        },
        vault_identity_env: "V".into(),
        signing_key_env: "K".into(),
        media: Some(Media {
            endpoint: "http://s3".into(),
            bucket: "b".into(),
            region: "r".into(),
            access_key_env: "A".into(),
            secret_key_env: "S".into(),
        }),
        secure_cookies: false,
        clamd: Some("c:1".into()),
        metrics_listen: Some("m:2".into()),
    };
    let text = round_trip(&console);
    let stray = format!("{text}stray: 1\n");
    assert!(serde_saphyr::from_str::<ConsoleConfig>(&stray).is_err());
    let nested = text.replace("bucket: b", "bucket: b\n  stray: 1");
    assert_ne!(nested, text);
    assert!(serde_saphyr::from_str::<ConsoleConfig>(&nested).is_err());
}
