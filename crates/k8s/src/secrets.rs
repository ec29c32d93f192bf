//! Every Secret, each value written once. Consumers reference these names and keys; no secret value
//! is ever written into a ConfigMap or any other object.

use mxstack_spec::{Feature, MediaBackend, SecretName};
use mxstack_topology::addressing::SYNAPSE_SECRET_FILES;
use mxstack_topology::backup;
use mxstack_topology::li::{LI_ROLE, REPLICATION_ROLE};
use mxstack_topology::li_browsing::WORKING_COPY_ROLE;
use mxstack_topology::li_console::CONSOLE_DB_ROLE;
use mxstack_topology::registry as reg;
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
/// The key vault's store API key: the vault checks it, Synapse main's escrow module sends it.
pub const KEY_VAULT_API_KEY: &str = "key-vault-api-key";
pub const KEY_VAULT_STORE_API_KEY: &str = "store_api_key";
/// The key vault's retrieval API key: the vault checks it, the LI console sends it.
pub const KEY_VAULT_RETRIEVAL: &str = "key-vault-retrieval-api-key";
pub const KEY_VAULT_RETRIEVAL_API_KEY: &str = "retrieval_api_key";
/// The second key of each the vault accepts while `mxstack rotate` replaces it (only the vault
/// reads these keys; the escrow module and the console read the current one).
pub const KEY_VAULT_OTHER_STORE_API_KEY: &str = "other_store_api_key";
pub const KEY_VAULT_OTHER_RETRIEVAL_API_KEY: &str = "other_retrieval_api_key";
/// li_replicator's password: CloudNativePG sets it on main (managed role) and li-sync reads it.
pub const LI_REPLICATION_CREDENTIALS: &str = "li-replication-credentials";
/// li_sync's password: the LI cluster's initdb owner and managed role, read by li-sync and the LI
/// jobs.
pub const LI_DB_CREDENTIALS: &str = "li-db-credentials";
/// synapse_li's password: the working copy's owner (managed role), read by Synapse LI.
pub const LI_WORKING_COPY_CREDENTIALS: &str = "li-working-copy-credentials";
/// li-sync's S3 identity: read main's bucket, write the LI bucket.
pub const LI_SYNC_S3_CREDENTIALS: &str = "li-sync-s3-credentials";
/// The LI PostgreSQL's backup identity: read, list and write the LI backup bucket, nothing else
/// (the LI cluster's ObjectStore reads it; `topology::backup` says why it is its own).
pub const LI_BACKUP_S3_CREDENTIALS: &str = "li-pg-backup-s3-credentials";
/// Synapse LI's S3 identity: read the LI bucket. The LI console reads LI media with it too.
pub const SYNAPSE_LI_S3_CREDENTIALS: &str = "synapse-li-s3-credentials";
/// li_console's password: the LI cluster's managed role (read only), read by the LI console.
pub const LI_CONSOLE_DB_CREDENTIALS: &str = "li-console-db";
/// The age identity (private key) escrowed keys are encrypted to: the LI console only (the key
/// vault gets its public recipient in its config, never this Secret).
pub const LI_CONSOLE_VAULT_IDENTITY: &str = "li-console-vault-identity";
pub const LI_CONSOLE_VAULT_IDENTITY_KEY: &str = "identity";
/// The LI console's Ed25519 seed that signs evidence manifests.
pub const LI_CONSOLE_SIGNING_KEY: &str = "li-console-signing-key";
pub const LI_CONSOLE_SIGNING_KEY_KEY: &str = "signing_key";
/// The basic-auth gate of the LI web UIs, as htpasswd (`{SHA}`): `.htpasswd` for Envoy Gateway,
/// `users` for Traefik. Holds a hash, not the password (that stays in secrets.yaml).
pub const LI_GATE_USERS: &str = "li-gate-users";
/// The one user of the basic-auth gate (its password is `li_gate_password` in secrets.yaml).
pub const GATE_USER: &str = "investigator";
/// CloudNativePG reloads a managed role's password when its Secret carries this label.
const CNPG_RELOAD: (&str, &str) = ("cnpg.io/reload", "true");

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
            // With feature li, main's identity reaches its own buckets only (topology::backup).
            let mut list = vec![json!({
                "name": backup::MAIN_IDENTITY,
                "credentials": mxstack_topology::seaweedfs::credentials(s, SecretName::S3AccessKey, SecretName::S3SecretKey),
                "actions": backup::main_identity_actions(ctx.cfg)
            })];
            if ctx.has(Feature::Li) {
                list.extend(li_s3_identities(ctx));
            }
            let identities = json!({ "identities": list });
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
        let keys = mxstack_topology::rtc_auth::livekit_keys(s);
        add(
            out,
            LIVEKIT_KEYS,
            "livekit",
            "Opaque",
            &[(LIVEKIT_KEYS_KEY, &keys)],
        );
    }
    if ctx.has(Feature::Li) {
        for (name, key, other, secret) in [
            (
                KEY_VAULT_API_KEY,
                KEY_VAULT_STORE_API_KEY,
                KEY_VAULT_OTHER_STORE_API_KEY,
                SecretName::KeyVaultStoreApiKey,
            ),
            (
                KEY_VAULT_RETRIEVAL,
                KEY_VAULT_RETRIEVAL_API_KEY,
                KEY_VAULT_OTHER_RETRIEVAL_API_KEY,
                SecretName::KeyVaultRetrievalApiKey,
            ),
        ] {
            // While a rotation runs, the second key the vault accepts (optional in its env).
            let accepted = s.accepted(secret);
            let mut data = vec![(key, accepted[0])];
            data.extend(accepted.get(1).map(|v| (other, *v)));
            add(out, name, "key-vault", "Opaque", &data);
        }
        li_secrets(ctx, out);
    }
}

/// The LI credentials, each in one Secret that every reader references.
fn li_secrets(ctx: &Ctx, out: &mut Out) {
    let s = ctx.secrets;
    // Passwords of roles CloudNativePG manages: basic-auth, with the reload label.
    for (name, app, user, secret) in [
        (
            LI_REPLICATION_CREDENTIALS,
            "postgres",
            REPLICATION_ROLE,
            SecretName::LiReplicationPassword,
        ),
        (
            LI_DB_CREDENTIALS,
            reg::li_postgres::COMPONENT.name(),
            LI_ROLE,
            SecretName::LiDbPassword,
        ),
        (
            LI_WORKING_COPY_CREDENTIALS,
            reg::li_postgres::COMPONENT.name(),
            WORKING_COPY_ROLE,
            SecretName::LiWorkingCopyDbPassword,
        ),
        (
            LI_CONSOLE_DB_CREDENTIALS,
            reg::li_postgres::COMPONENT.name(),
            CONSOLE_DB_ROLE,
            SecretName::LiConsoleDbPassword,
        ),
    ] {
        let mut sec = secret_with(
            ctx,
            name,
            app,
            "kubernetes.io/basic-auth",
            &[("username", user), (DB_PASSWORD_KEY, s.get(secret))],
        );
        sec.metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert(CNPG_RELOAD.0.into(), CNPG_RELOAD.1.into());
        out.add(Phase::Infrastructure, FILE, sec);
    }
    for (name, app, access, secret_key) in [
        (
            LI_SYNC_S3_CREDENTIALS,
            reg::li_sync::COMPONENT.name(),
            SecretName::LiS3AccessKey,
            SecretName::LiS3SecretKey,
        ),
        (
            SYNAPSE_LI_S3_CREDENTIALS,
            reg::synapse_li::COMPONENT.name(),
            SecretName::LiBrowsingS3AccessKey,
            SecretName::LiBrowsingS3SecretKey,
        ),
        (
            LI_BACKUP_S3_CREDENTIALS,
            crate::li::LI_POSTGRES_APP,
            SecretName::LiBackupS3AccessKey,
            SecretName::LiBackupS3SecretKey,
        ),
    ] {
        out.add(
            Phase::Infrastructure,
            FILE,
            secret_with(
                ctx,
                name,
                app,
                "Opaque",
                &[
                    (S3_ACCESS_KEY_ID, s.get(access)),
                    (S3_SECRET_KEY, s.get(secret_key)),
                ],
            ),
        );
    }
    for (name, key, value) in [
        (
            LI_CONSOLE_VAULT_IDENTITY,
            LI_CONSOLE_VAULT_IDENTITY_KEY,
            SecretName::KeyVaultAgeIdentity,
        ),
        (
            LI_CONSOLE_SIGNING_KEY,
            LI_CONSOLE_SIGNING_KEY_KEY,
            SecretName::LiConsoleSigningKey,
        ),
    ] {
        out.add(
            Phase::Infrastructure,
            FILE,
            secret_with(
                ctx,
                name,
                reg::li_console::COMPONENT.name(),
                "Opaque",
                &[(key, s.get(value))],
            ),
        );
    }
    let users = crate::htpasswd::sha_line(GATE_USER, s.get(SecretName::LiGatePassword)) + "\n";
    out.add(
        Phase::Infrastructure,
        FILE,
        secret_with(
            ctx,
            LI_GATE_USERS,
            "gateway",
            "Opaque",
            &[(".htpasswd", &users), ("users", &users)],
        ),
    );
}

fn secret_with(
    ctx: &Ctx,
    name: &str,
    app: &str,
    type_: &str,
    data: &[(&str, &str)],
) -> k8s_openapi::api::core::v1::Secret {
    secret(ctx, name, app, type_, map(data))
}

/// SeaweedFS identities of the LI data path. li-sync reads main's bucket and writes the LI
/// bucket; Synapse LI only reads the LI bucket. Neither can delete in main's bucket. SeaweedFS's
/// `Write` also allows deleting, so li-sync could delete in the LI bucket: it never does, and no
/// other identity but the admin one can.
fn li_s3_identities(ctx: &Ctx) -> Vec<serde_json::Value> {
    let s = ctx.secrets;
    let main = &ctx.cfg.media.bucket;
    let li = ctx.cfg.li.media_bucket(&ctx.cfg.media);
    vec![
        json!({
            "name": reg::li_sync::COMPONENT.name(),
            "credentials": mxstack_topology::seaweedfs::credentials(s, SecretName::LiS3AccessKey, SecretName::LiS3SecretKey),
            "actions": [
                format!("Read:{main}"), format!("List:{main}"),
                format!("Read:{li}"), format!("List:{li}"), format!("Write:{li}"),
            ]
        }),
        json!({
            "name": backup::LI_BACKUP_IDENTITY,
            "credentials": mxstack_topology::seaweedfs::credentials(s, SecretName::LiBackupS3AccessKey, SecretName::LiBackupS3SecretKey),
            "actions": backup::li_backup_identity_actions(ctx.cfg)
        }),
        json!({
            "name": reg::synapse_li::COMPONENT.name(),
            "credentials": mxstack_topology::seaweedfs::credentials(s, SecretName::LiBrowsingS3AccessKey, SecretName::LiBrowsingS3SecretKey),
            "actions": [format!("Read:{li}"), format!("List:{li}")]
        }),
    ]
}
