//! Every Secret, each value written once. Consumers reference these names and keys; no secret value
//! is ever written into a ConfigMap or any other object.

use mxstack_spec::{Feature, MediaBackend, SecretName};
use mxstack_topology::addressing::SYNAPSE_SECRET_FILES;
use mxstack_topology::synapse::DATABASE_USER;
use serde_json::json;

use crate::meta::{map, secret};
use crate::{Ctx, Out, Phase};

const FILE: &str = "secrets.yaml";

/// The synapse role's password: CloudNativePG creates the role with it (bootstrap.initdb.secret) and
/// Synapse reads it as PGPASSWORD, so the two cannot differ (seed 004 issue 1.1).
pub const DB_CREDENTIALS: &str = "synapse-db-credentials";
pub const DB_PASSWORD_KEY: &str = "password";
/// Files Synapse reads through `*_path` options (keys = file names).
pub const SYNAPSE_SECRETS: &str = "synapse-secrets";
pub const VALKEY_AUTH: &str = "valkey-auth";
pub const VALKEY_PASSWORD_KEY: &str = "password";
pub const S3_CREDENTIALS: &str = "s3-credentials";
pub const S3_ACCESS_KEY_ID: &str = "ACCESS_KEY_ID";
pub const S3_SECRET_KEY: &str = "ACCESS_SECRET_KEY";
/// SeaweedFS S3 gateway identities (holds the S3 key pair, so it is a Secret).
pub const SEAWEEDFS_S3_CONFIG: &str = "seaweedfs-s3-config";
pub const SEAWEEDFS_S3_CONFIG_KEY: &str = "s3.json";
/// MinIO Tenant root credentials (`config.env`), the same key pair as s3-credentials.
pub const MINIO_CONFIGURATION: &str = "minio-env-configuration";
pub const TURN_AUTH: &str = "turn-auth";
pub const TURN_SECRET_KEY: &str = "shared_secret";
pub const LIVEKIT_KEYS: &str = "livekit-keys";
/// `<api key>: <api secret>`, the format of LiveKit's LIVEKIT_KEYS variable.
pub const LIVEKIT_KEYS_KEY: &str = "keys";
pub const KEY_VAULT_API_KEY: &str = "key-vault-api-key";

pub fn render(ctx: &Ctx, out: &mut Out) {
    let s = ctx.secrets;
    let add = |out: &mut Out, name: &str, app: &str, type_: &str, data: &[(&str, &str)]| {
        out.add(
            Phase::Infrastructure,
            FILE,
            secret(ctx, name, app, type_, map(data)),
        );
    };
    add(
        out,
        DB_CREDENTIALS,
        "postgres",
        "kubernetes.io/basic-auth",
        &[
            ("username", DATABASE_USER),
            (DB_PASSWORD_KEY, s.get(SecretName::SynapseDbPassword)),
        ],
    );
    let synapse_files: Vec<(&str, &str)> = SYNAPSE_SECRET_FILES
        .iter()
        .map(|(file, name)| (*file, s.get(*name)))
        .collect();
    add(out, SYNAPSE_SECRETS, "synapse", "Opaque", &synapse_files);
    add(
        out,
        VALKEY_AUTH,
        "valkey",
        "Opaque",
        &[(VALKEY_PASSWORD_KEY, s.get(SecretName::RedisPassword))],
    );
    let access = s.get(SecretName::S3AccessKey);
    let secret_key = s.get(SecretName::S3SecretKey);
    add(
        out,
        S3_CREDENTIALS,
        "s3",
        "Opaque",
        &[(S3_ACCESS_KEY_ID, access), (S3_SECRET_KEY, secret_key)],
    );
    match ctx.cfg.media.backend {
        MediaBackend::Seaweedfs => {
            let identities = json!({
                "identities": [{
                    "name": "mxstack",
                    "credentials": [{ "accessKey": access, "secretKey": secret_key }],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"]
                }]
            });
            let text = serde_json::to_string_pretty(&identities).expect("json");
            add(
                out,
                SEAWEEDFS_S3_CONFIG,
                "seaweedfs",
                "Opaque",
                &[(SEAWEEDFS_S3_CONFIG_KEY, &text)],
            );
        }
        MediaBackend::MinioLegacy => {
            let env = format!(
                "export MINIO_ROOT_USER=\"{access}\"\nexport MINIO_ROOT_PASSWORD=\"{secret_key}\"\nexport MINIO_BROWSER=\"off\"\n"
            );
            add(
                out,
                MINIO_CONFIGURATION,
                "minio",
                "Opaque",
                &[("config.env", &env)],
            );
        }
        MediaBackend::S3 => {}
    }
    if ctx.has(Feature::Calls) {
        add(
            out,
            TURN_AUTH,
            "coturn",
            "Opaque",
            &[(TURN_SECRET_KEY, s.get(SecretName::TurnSharedSecret))],
        );
        let keys = format!(
            "{}: {}",
            s.get(SecretName::LivekitApiKey),
            s.get(SecretName::LivekitApiSecret)
        );
        add(
            out,
            LIVEKIT_KEYS,
            "livekit",
            "Opaque",
            &[(LIVEKIT_KEYS_KEY, &keys)],
        );
    }
    if ctx.has(Feature::Li) {
        add(
            out,
            KEY_VAULT_API_KEY,
            "key-vault",
            "Opaque",
            &[("api_key", s.get(SecretName::KeyVaultApiKey))],
        );
    }
}
