//! `secrets.yaml`: every secret of the system, generated with the OS CSPRNG, written mode 0600.
//!
//! The file is a flat map from [`SecretName`] to value. Re-running `init` fills in missing names and
//! never replaces an existing value, so a secret that a running deployment already uses stays stable.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use base64::Engine;

use crate::{placeholder_reason, SourceLocation, SpecError, YamlLocator};

/// How a secret's value is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretShape {
    /// Letters and digits (safe in URLs, DSNs, config files and HTTP headers).
    Alnum(usize),
    /// Uppercase letters and digits, as S3 access key IDs are.
    AccessKeyId,
    /// Synapse's signing key format: `ed25519 a_XXXX <unpadded base64 seed>`.
    SynapseSigningKey,
    /// `n` random bytes, standard base64 with padding (a raw key, e.g. Curve25519).
    Base64Bytes(usize),
    /// An age X25519 identity (`AGE-SECRET-KEY-1...`); its recipient (`age1...`) is public.
    AgeIdentity,
}

/// Every secret the system uses: name, purpose, and how it is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SecretName {
    SynapseDbPassword,
    LiReplicationPassword,
    RedisPassword,
    S3AccessKey,
    S3SecretKey,
    MacaroonSecretKey,
    FormSecret,
    RegistrationSharedSecret,
    WorkerReplicationSecret,
    TurnSharedSecret,
    KeyVaultStoreApiKey,
    KeyVaultRetrievalApiKey,
    KeyVaultAgeIdentity,
    LiConsoleDbPassword,
    LiConsoleSigningKey,
    LivekitApiKey,
    LivekitApiSecret,
    SigningKey,
    ContentScannerRequestSecret,
    LiDbPassword,
    LiS3AccessKey,
    LiS3SecretKey,
    LiWorkingCopyDbPassword,
    LiBrowsingS3AccessKey,
    LiBrowsingS3SecretKey,
    LiGatePassword,
    LiBackupS3AccessKey,
    LiBackupS3SecretKey,
}

impl SecretName {
    pub const ALL: [SecretName; 28] = [
        SecretName::SynapseDbPassword,
        SecretName::LiReplicationPassword,
        SecretName::RedisPassword,
        SecretName::S3AccessKey,
        SecretName::S3SecretKey,
        SecretName::MacaroonSecretKey,
        SecretName::FormSecret,
        SecretName::RegistrationSharedSecret,
        SecretName::WorkerReplicationSecret,
        SecretName::TurnSharedSecret,
        SecretName::KeyVaultStoreApiKey,
        SecretName::KeyVaultRetrievalApiKey,
        SecretName::KeyVaultAgeIdentity,
        SecretName::LiConsoleDbPassword,
        SecretName::LiConsoleSigningKey,
        SecretName::LivekitApiKey,
        SecretName::LivekitApiSecret,
        SecretName::SigningKey,
        SecretName::ContentScannerRequestSecret,
        SecretName::LiDbPassword,
        SecretName::LiS3AccessKey,
        SecretName::LiS3SecretKey,
        SecretName::LiWorkingCopyDbPassword,
        SecretName::LiBrowsingS3AccessKey,
        SecretName::LiBrowsingS3SecretKey,
        SecretName::LiGatePassword,
        SecretName::LiBackupS3AccessKey,
        SecretName::LiBackupS3SecretKey,
    ];

    pub fn key(self) -> &'static str {
        match self {
            SecretName::SynapseDbPassword => "synapse_db_password",
            SecretName::LiReplicationPassword => "li_replication_password",
            SecretName::RedisPassword => "redis_password",
            SecretName::S3AccessKey => "s3_access_key",
            SecretName::S3SecretKey => "s3_secret_key",
            SecretName::MacaroonSecretKey => "macaroon_secret_key",
            SecretName::FormSecret => "form_secret",
            SecretName::RegistrationSharedSecret => "registration_shared_secret",
            SecretName::WorkerReplicationSecret => "worker_replication_secret",
            SecretName::TurnSharedSecret => "turn_shared_secret",
            SecretName::KeyVaultStoreApiKey => "key_vault_store_api_key",
            SecretName::KeyVaultRetrievalApiKey => "key_vault_retrieval_api_key",
            SecretName::KeyVaultAgeIdentity => "key_vault_age_identity",
            SecretName::LiConsoleDbPassword => "li_console_db_password",
            SecretName::LiConsoleSigningKey => "li_console_signing_key",
            SecretName::LivekitApiKey => "livekit_api_key",
            SecretName::LivekitApiSecret => "livekit_api_secret",
            SecretName::SigningKey => "synapse_signing_key",
            SecretName::ContentScannerRequestSecret => "content_scanner_request_secret",
            SecretName::LiDbPassword => "li_db_password",
            SecretName::LiS3AccessKey => "li_s3_access_key",
            SecretName::LiS3SecretKey => "li_s3_secret_key",
            SecretName::LiWorkingCopyDbPassword => "li_working_copy_db_password",
            SecretName::LiBrowsingS3AccessKey => "li_browsing_s3_access_key",
            SecretName::LiBrowsingS3SecretKey => "li_browsing_s3_secret_key",
            SecretName::LiGatePassword => "li_gate_password",
            SecretName::LiBackupS3AccessKey => "li_backup_s3_access_key",
            SecretName::LiBackupS3SecretKey => "li_backup_s3_secret_key",
        }
    }

    pub fn purpose(self) -> &'static str {
        match self {
            SecretName::SynapseDbPassword => {
                "password of the PostgreSQL role that owns the synapse database"
            }
            SecretName::LiReplicationPassword => {
                "password of the read-only replication role the LI replica uses"
            }
            SecretName::RedisPassword => {
                "Valkey/Redis AUTH password (Synapse, replicas, Sentinel, HAProxy check)"
            }
            SecretName::S3AccessKey => "S3 access key id for media and backups",
            SecretName::S3SecretKey => "S3 secret key for media and backups",
            SecretName::MacaroonSecretKey => "Synapse macaroon_secret_key",
            SecretName::FormSecret => "Synapse form_secret",
            SecretName::RegistrationSharedSecret => {
                "Synapse registration_shared_secret (admin user creation)"
            }
            SecretName::WorkerReplicationSecret => {
                "Synapse worker_replication_secret (main <-> workers)"
            }
            SecretName::TurnSharedSecret => {
                "coturn static-auth-secret and Synapse turn_shared_secret"
            }
            SecretName::KeyVaultStoreApiKey => {
                "API key Synapse's escrow module uses to store users' E2EE keys in the key vault"
            }
            SecretName::KeyVaultRetrievalApiKey => {
                "API key the LI console uses to retrieve escrowed keys from the key vault"
            }
            SecretName::KeyVaultAgeIdentity => {
                "age identity (private key) of the key vault: escrowed keys are encrypted to its recipient; only the LI console holds it"
            }
            SecretName::LiConsoleDbPassword => {
                "LI replica password of the LI console (role li_console, read only)"
            }
            SecretName::LiConsoleSigningKey => {
                "LI console's Ed25519 key (32-byte seed) that signs evidence manifests"
            }
            SecretName::LivekitApiKey => "LiveKit API key",
            SecretName::LivekitApiSecret => "LiveKit API secret",
            SecretName::SigningKey => "Synapse ed25519 signing key (main and LI share it)",
            SecretName::ContentScannerRequestSecret => {
                "content scanner Curve25519 key: clients encrypt encrypted-attachment metadata to it"
            }
            SecretName::LiDbPassword => {
                "password of li-sync's role on the LI database (owns the replica and its history)"
            }
            SecretName::LiS3AccessKey => {
                "S3 access key id of li-sync: read the media bucket, write the LI media bucket"
            }
            SecretName::LiS3SecretKey => "S3 secret key of li-sync",
            SecretName::LiWorkingCopyDbPassword => {
                "password of Synapse LI's role on the LI browsing stack's working copy database"
            }
            SecretName::LiBrowsingS3AccessKey => {
                "S3 access key id of Synapse LI: read-only on the LI media bucket"
            }
            SecretName::LiBrowsingS3SecretKey => "S3 secret key of Synapse LI",
            SecretName::LiGatePassword => {
                "password of user `investigator` at the basic-auth gate of Element LI and Synapse Admin LI"
            }
            SecretName::LiBackupS3AccessKey => {
                "S3 access key id of the LI PostgreSQL's backups: the only identity that can write the LI backup bucket"
            }
            SecretName::LiBackupS3SecretKey => "S3 secret key of the LI PostgreSQL's backups",
        }
    }

    pub fn shape(self) -> SecretShape {
        match self {
            SecretName::S3AccessKey
            | SecretName::LiS3AccessKey
            | SecretName::LiBrowsingS3AccessKey
            | SecretName::LiBackupS3AccessKey => SecretShape::AccessKeyId,
            SecretName::SigningKey => SecretShape::SynapseSigningKey,
            SecretName::LivekitApiKey => SecretShape::Alnum(16),
            SecretName::ContentScannerRequestSecret => SecretShape::Base64Bytes(32),
            SecretName::LiConsoleSigningKey => SecretShape::Base64Bytes(32),
            SecretName::KeyVaultAgeIdentity => SecretShape::AgeIdentity,
            _ => SecretShape::Alnum(48),
        }
    }

    pub fn from_key(key: &str) -> Option<SecretName> {
        SecretName::ALL.into_iter().find(|s| s.key() == key)
    }

    /// Whether `mxstack rotate` replaces it (docs/ROTATION.md has the order and cost of each).
    pub fn rotation(self) -> Rotation {
        use SecretName::*;
        match self {
            SynapseDbPassword | RedisPassword | MacaroonSecretKey | FormSecret
            | RegistrationSharedSecret | WorkerReplicationSecret | TurnSharedSecret
            | ContentScannerRequestSecret | S3AccessKey | S3SecretKey | LiS3AccessKey
            | LiS3SecretKey | LiBrowsingS3AccessKey | LiBrowsingS3SecretKey | LiBackupS3AccessKey
            | LiBackupS3SecretKey
            | KeyVaultStoreApiKey | KeyVaultRetrievalApiKey | LiReplicationPassword
            | LiDbPassword | LiWorkingCopyDbPassword | LiConsoleDbPassword | LiGatePassword
            | LivekitApiKey | LivekitApiSecret => Rotation::Rotatable,
            SigningKey => Rotation::Never(
                "the server's signing key is its federation identity: replacing it needs old_signing_keys and key expiry, a procedure of its own",
            ),
            KeyVaultAgeIdentity => Rotation::Never(
                "escrowed keys are encrypted to this identity: a new one cannot open them",
            ),
            LiConsoleSigningKey => Rotation::Never(
                "evidence packages already handed out are checked against its public key",
            ),
        }
    }

    /// The secret rotated together with this one, if any: an S3 access key and its secret key,
    /// a LiveKit API key and its secret. The accepting side holds *pairs* (a SeaweedFS
    /// credential, an entry of LiveKit's `keys:` map), looked up by the key id: a new secret
    /// under the old id cannot sit beside the old one, so both halves change at once.
    pub fn companion(self) -> Option<SecretName> {
        use SecretName::*;
        Some(match self {
            S3AccessKey => S3SecretKey,
            S3SecretKey => S3AccessKey,
            LiS3AccessKey => LiS3SecretKey,
            LiS3SecretKey => LiS3AccessKey,
            LiBrowsingS3AccessKey => LiBrowsingS3SecretKey,
            LiBrowsingS3SecretKey => LiBrowsingS3AccessKey,
            LiBackupS3AccessKey => LiBackupS3SecretKey,
            LiBackupS3SecretKey => LiBackupS3AccessKey,
            LivekitApiKey => LivekitApiSecret,
            LivekitApiSecret => LivekitApiKey,
            _ => return None,
        })
    }

    /// Every secret `mxstack rotate --all-rotatable` replaces.
    pub fn rotatable() -> Vec<SecretName> {
        SecretName::ALL
            .into_iter()
            .filter(|n| n.rotation() == Rotation::Rotatable)
            .collect()
    }
}

/// Secret names earlier versions wrote and nothing uses: `key_vault_api_key` (never read; the
/// escrow module's key is `key_vault_store_api_key`).
const RETIRED_SECRETS: [&str; 1] = ["key_vault_api_key"];

/// secrets.yaml names of the credentials the operator supplies (not generated): a mobile app's APNs
/// key or FCM service account is `push_credential.<app id>` (feature push, docs/PUSH.md).
pub const PUSH_CREDENTIAL_PREFIX: &str = "push_credential.";

/// secrets.yaml names of values being retired by `mxstack rotate`: `previous.<name>` holds the
/// old value while components that can accept two values still accept it (docs/ROTATION.md).
pub const PREVIOUS_PREFIX: &str = "previous.";

/// secrets.yaml names of values a Kubernetes rotation is introducing: `next.<name>` holds the new
/// value while the components that accept two values take it besides the current one, before any
/// reader switches (`mxstack rotate --kubernetes`, docs/ROTATION.md).
pub const NEXT_PREFIX: &str = "next.";

/// Whether `mxstack rotate` can replace a secret, and why not when it cannot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotation {
    /// Rotated by `mxstack rotate`, locally and on Kubernetes.
    Rotatable,
    /// Not implemented yet: the reason, said to the operator as it is.
    NotYet(&'static str),
    /// Not a rotation at all (replacing it changes an identity): the reason.
    Never(&'static str),
}

/// The values of all secrets, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Secrets {
    values: BTreeMap<String, String>,
}

impl Secrets {
    pub fn get(&self, name: SecretName) -> &str {
        self.values
            .get(name.key())
            .map(String::as_str)
            .unwrap_or("")
    }

    pub fn contains(&self, name: SecretName) -> bool {
        self.values.contains_key(name.key())
    }

    /// A credential the operator put into secrets.yaml (`push_credential.<app id>`), if present.
    pub fn supplied(&self, key: &str) -> Option<&str> {
        self.values
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
    }

    /// Adds or replaces an operator-supplied credential (tests and tools; `init` never does).
    pub fn supply(&mut self, key: &str, value: &str) {
        debug_assert!(key.starts_with(PUSH_CREDENTIAL_PREFIX));
        self.values.insert(key.to_string(), value.to_string());
    }

    /// The value `mxstack rotate` is retiring, while components may still accept it.
    pub fn previous(&self, name: SecretName) -> Option<&str> {
        self.values
            .get(&format!("{PREVIOUS_PREFIX}{}", name.key()))
            .map(String::as_str)
    }

    /// Sets `name` to `value` and keeps the value it replaces as `previous.<name>`. Idempotent: a
    /// second call with the same value (a resumed rotation) keeps the first previous value.
    pub fn replace_keeping_previous(&mut self, name: SecretName, value: &str) {
        let old = self.get(name).to_string();
        if old == value {
            return;
        }
        self.values
            .insert(format!("{PREVIOUS_PREFIX}{}", name.key()), old);
        self.values
            .insert(name.key().to_string(), value.to_string());
    }

    /// The value a Kubernetes rotation is introducing, accepted but not yet used.
    pub fn next(&self, name: SecretName) -> Option<&str> {
        self.values
            .get(&format!("{NEXT_PREFIX}{}", name.key()))
            .map(String::as_str)
    }

    /// Introduces `value` as `next.<name>`; the current value stays in use.
    pub fn set_next(&mut self, name: SecretName, value: &str) {
        self.values
            .insert(format!("{NEXT_PREFIX}{}", name.key()), value.to_string());
    }

    /// The readers switch: `next.<name>` becomes the value, the old one `previous.<name>`.
    /// Returns whether there was a next value.
    pub fn promote_next(&mut self, name: SecretName) -> bool {
        match self.values.remove(&format!("{NEXT_PREFIX}{}", name.key())) {
            Some(v) => {
                self.replace_keeping_previous(name, &v);
                true
            }
            None => false,
        }
    }

    /// Every value of `name` a component that holds two must accept now: the current one, then
    /// the one being introduced or retired.
    pub fn accepted(&self, name: SecretName) -> Vec<&str> {
        let mut out = vec![self.get(name)];
        out.extend(self.next(name));
        out.extend(self.previous(name));
        out
    }

    /// Forgets the retired value of `name` (the last step of a rotation).
    pub fn drop_previous(&mut self, name: SecretName) {
        self.values
            .remove(&format!("{PREVIOUS_PREFIX}{}", name.key()));
    }

    /// Fills in every missing secret; returns the names it generated. Existing values are kept.
    pub fn fill_missing(&mut self) -> Result<Vec<SecretName>, getrandom::Error> {
        let mut made = Vec::new();
        for name in SecretName::ALL {
            if !self.values.contains_key(name.key()) {
                self.values
                    .insert(name.key().to_string(), generate(name.shape())?);
                made.push(name);
            }
        }
        Ok(made)
    }

    /// A complete set of freshly generated secrets.
    pub fn generate_all() -> Result<Secrets, getrandom::Error> {
        let mut s = Secrets::default();
        s.fill_missing()?;
        Ok(s)
    }

    /// Parses secrets.yaml text. Unknown names and placeholder values are errors, located.
    pub fn from_yaml(file: &str, text: &str) -> Result<Secrets, SpecError> {
        let locator = YamlLocator::new(file, text);
        let values: BTreeMap<String, String> = if text.trim().is_empty() {
            BTreeMap::new()
        } else {
            serde_saphyr::from_str(text).map_err(|e| crate::config::yaml_error(&locator, &e))?
        };
        let mut values = values;
        // Names of earlier versions that nothing reads any more: dropped, not refused.
        values.retain(|k, _| !RETIRED_SECRETS.contains(&k.as_str()));
        for (k, v) in &values {
            let retiring = k
                .strip_prefix(PREVIOUS_PREFIX)
                .or_else(|| k.strip_prefix(NEXT_PREFIX))
                .is_some_and(|n| SecretName::from_key(n).is_some());
            if SecretName::from_key(k).is_none()
                && !k.starts_with(PUSH_CREDENTIAL_PREFIX)
                && !retiring
            {
                return Err(SpecError {
                    location: locator.locate(k),
                    message: format!("unknown secret `{k}`"),
                    fix: "remove it; `mxstack init` writes every secret the system needs".into(),
                });
            }
            if let Some(why) = placeholder_reason(v) {
                return Err(SpecError {
                    location: locator.locate(k),
                    message: format!("secret `{k}` is not a real value: {why}"),
                    fix: format!(
                        "delete the `{k}` line and run `mxstack init` again to generate it"
                    ),
                });
            }
            if k == SecretName::KeyVaultAgeIdentity.key() {
                if let Err(why) = age_recipient(v) {
                    return Err(SpecError {
                        location: locator.locate(k),
                        message: why,
                        fix: format!(
                            "delete the `{k}` line and run `mxstack init` again to generate it (keys escrowed to the old identity stay readable only with the old identity)"
                        ),
                    });
                }
            }
        }
        Ok(Secrets { values })
    }

    pub fn load(path: &Path) -> Result<Secrets, SpecError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| SpecError {
            location: SourceLocation {
                file: file.clone(),
                line: 0,
                column: 0,
            },
            message: format!("cannot read the secrets file: {e}"),
            fix: "run `mxstack init` in the config's directory to generate secrets.yaml".into(),
        })?;
        Secrets::from_yaml(&file, &text)
    }

    /// Checks that every secret the system needs is present.
    pub fn require_complete(&self, file: &str) -> Result<(), SpecError> {
        let missing: Vec<&str> = SecretName::ALL
            .iter()
            .filter(|n| !self.contains(**n))
            .map(|n| n.key())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(SpecError {
            location: SourceLocation { file: file.to_string(), line: 1, column: 1 },
            message: format!("secrets missing: {}", missing.join(", ")),
            fix: "run `mxstack init --dir <config dir>` again: it adds missing secrets and keeps existing ones".into(),
        })
    }

    pub fn to_yaml(&self) -> String {
        let mut out = String::from(
            "# mxstack secrets: generated by `mxstack init`. Keep this file private (mode 0600) and backed up.\n\
             # Deleting a line and re-running init generates a new value for it; nothing else is ever replaced.\n",
        );
        for name in SecretName::ALL {
            if let Some(v) = self.values.get(name.key()) {
                out.push_str(&format!(
                    "# {}\n{}: \"{}\"\n",
                    name.purpose(),
                    name.key(),
                    v
                ));
            }
            if let Some(v) = self.next(name) {
                out.push_str(&format!(
                    "# being introduced by `mxstack rotate --kubernetes` (accepted, not yet used)\n{NEXT_PREFIX}{}: \"{v}\"\n",
                    name.key()
                ));
            }
            if let Some(v) = self.previous(name) {
                out.push_str(&format!(
                    "# being retired by `mxstack rotate` (still accepted where a component allows two)\n{PREVIOUS_PREFIX}{}: \"{v}\"\n",
                    name.key()
                ));
            }
        }
        // Supplied credentials (multi-line PEM/JSON): kept as they are, JSON-quoted (valid YAML).
        for (k, v) in self
            .values
            .iter()
            .filter(|(k, _)| k.starts_with(PUSH_CREDENTIAL_PREFIX))
        {
            out.push_str(&format!(
                "# supplied by the operator (docs/PUSH.md)\n{}: {}\n",
                serde_json::Value::String(k.clone()),
                serde_json::Value::String(v.clone())
            ));
        }
        out
    }

    /// Writes the file atomically with mode 0600 (created with that mode: never readable by others).
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let tmp = dir.join(format!(
            ".{}.tmp",
            path.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("secrets")
        ));
        {
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            let mut f = opts.open(&tmp)?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            }
            f.write_all(self.to_yaml().as_bytes())?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)
    }

    /// The key vault's public age recipient (`age1...`), derived from `key_vault_age_identity`.
    pub fn key_vault_recipient(&self) -> Result<String, String> {
        age_recipient(self.get(SecretName::KeyVaultAgeIdentity))
    }

    /// The public half (standard base64) of the LI console's Ed25519 key `li_console_signing_key`:
    /// the key vault checks warrant claims with it, and anyone can check evidence packages.
    pub fn li_console_public_key(&self) -> Result<String, String> {
        ed25519_public_key(self.get(SecretName::LiConsoleSigningKey))
            .map_err(|e| format!("li_console_signing_key: {e}"))
    }

    /// Every value, for scanning rendered output for leaks.
    pub fn values(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// The public key (standard base64) of an Ed25519 key given as its 32-byte seed (standard
/// base64). The error never contains the seed.
pub fn ed25519_public_key(seed_b64: &str) -> Result<String, String> {
    let seed: [u8; 32] = base64::engine::general_purpose::STANDARD
        .decode(seed_b64.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| "not 32 bytes of base64".to_string())?;
    let key = ed25519_dalek::SigningKey::from_bytes(&seed);
    Ok(base64::engine::general_purpose::STANDARD.encode(key.verifying_key().to_bytes()))
}

/// The public recipient (`age1...`) of an age X25519 identity (`AGE-SECRET-KEY-1...`).
/// The error never contains the identity.
pub fn age_recipient(identity: &str) -> Result<String, String> {
    identity
        .trim()
        .parse::<age::x25519::Identity>()
        .map(|id| id.to_public().to_string())
        .map_err(|_| {
            "key_vault_age_identity is not an age X25519 identity (AGE-SECRET-KEY-1...)".into()
        })
}

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const UPPER_ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

fn random_from(alphabet: &[u8], len: usize) -> Result<String, getrandom::Error> {
    // Rejection sampling keeps every symbol equally likely.
    let limit = 256 - (256 % alphabet.len());
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        getrandom::fill(&mut buf)?;
        for b in buf {
            if (b as usize) < limit && out.len() < len {
                out.push(alphabet[b as usize % alphabet.len()] as char);
            }
        }
    }
    Ok(out)
}

pub fn generate(shape: SecretShape) -> Result<String, getrandom::Error> {
    Ok(match shape {
        SecretShape::Alnum(n) => random_from(ALNUM, n)?,
        SecretShape::AccessKeyId => random_from(UPPER_ALNUM, 20)?,
        SecretShape::Base64Bytes(n) => {
            let mut raw = vec![0u8; n];
            getrandom::fill(&mut raw)?;
            base64::engine::general_purpose::STANDARD.encode(raw)
        }
        SecretShape::AgeIdentity => {
            use age::secrecy::ExposeSecret;
            age::x25519::Identity::generate()
                .to_string()
                .expose_secret()
                .to_string()
        }
        SecretShape::SynapseSigningKey => {
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed)?;
            let id = random_from(ALNUM, 4)?;
            format!(
                "ed25519 a_{id} {}",
                base64::engine::general_purpose::STANDARD_NO_PAD.encode(seed)
            )
        }
    })
}

#[cfg(test)]
mod tests {

    #[test]
    fn supplied_push_credentials_load_and_survive_a_rewrite() {
        let mut s = Secrets::generate_all().unwrap();
        let pem = "-----BEGIN PRIVATE KEY-----\nMIGTAgEAMBMGByqGSM49\n-----END PRIVATE KEY-----\n";
        s.supply("push_credential.im.acme.ios", pem);
        let text = s.to_yaml();
        let back = Secrets::from_yaml("s.yaml", &text).unwrap();
        assert_eq!(back.supplied("push_credential.im.acme.ios"), Some(pem));
        assert_eq!(back, s);
        // Other unknown names stay refused.
        assert!(Secrets::from_yaml("s.yaml", "push_credentials: x\n").is_err());
    }

    use super::*;

    #[test]
    fn generates_every_secret_distinct() {
        let s = Secrets::generate_all().unwrap();
        let vals: std::collections::BTreeSet<_> = s.values().map(|(_, v)| v.to_string()).collect();
        assert_eq!(vals.len(), SecretName::ALL.len());
        let key = s.get(SecretName::SigningKey);
        let parts: Vec<_> = key.split(' ').collect();
        assert_eq!(parts[0], "ed25519");
        assert!(parts[1].starts_with("a_") && parts[1].len() == 6);
        let seed = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(parts[2])
            .unwrap();
        assert_eq!(seed.len(), 32);
        assert_eq!(s.get(SecretName::S3AccessKey).len(), 20);
        let id = s.get(SecretName::KeyVaultAgeIdentity);
        assert!(id.starts_with("AGE-SECRET-KEY-1"), "{id}");
        assert!(s.key_vault_recipient().unwrap().starts_with("age1"));
        assert!(placeholder_reason(id).is_none());
        assert!(age_recipient("AGE-SECRET-KEY-1nonsense").is_err());
    }

    #[test]
    fn fill_missing_keeps_existing() {
        let mut s = Secrets::generate_all().unwrap();
        let before = s.get(SecretName::RedisPassword).to_string();
        s.values.remove(SecretName::FormSecret.key());
        let made = s.fill_missing().unwrap();
        assert_eq!(made, vec![SecretName::FormSecret]);
        assert_eq!(s.get(SecretName::RedisPassword), before);
    }

    #[test]
    fn yaml_roundtrip_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secrets.yaml");
        let s = Secrets::generate_all().unwrap();
        s.write(&p).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        assert_eq!(Secrets::load(&p).unwrap(), s);
    }

    #[test]
    fn placeholder_secret_is_refused_with_location() {
        let err = Secrets::from_yaml("s.yaml", "redis_password: \"x1\"\nform_secret: CHANGEME\n")
            .unwrap_err();
        assert_eq!(err.location.line, 2);
        assert!(err.message.contains("form_secret"));
        assert!(!err.to_string().contains("x1"), "never echo a secret value");
    }

    #[test]
    fn previous_values_survive_a_rewrite_and_are_idempotent() {
        let mut s = Secrets::generate_all().unwrap();
        let old = s.get(SecretName::TurnSharedSecret).to_string();
        s.replace_keeping_previous(SecretName::TurnSharedSecret, "Nw7pQ2mX9vL4kR8tB3yC6fH1");
        s.replace_keeping_previous(SecretName::TurnSharedSecret, "Nw7pQ2mX9vL4kR8tB3yC6fH1");
        assert_eq!(s.previous(SecretName::TurnSharedSecret), Some(old.as_str()));
        let back = Secrets::from_yaml("s.yaml", &s.to_yaml()).unwrap();
        assert_eq!(back, s);
        s.drop_previous(SecretName::TurnSharedSecret);
        assert!(!s.to_yaml().contains(&old));
        assert!(
            Secrets::from_yaml("s.yaml", "previous.nonsense: Zx8vQ2mN7pL4kR9tW3yB6cF1\n").is_err()
        );
    }

    #[test]
    fn a_next_value_is_accepted_then_promoted_and_survives_a_rewrite() {
        let mut s = Secrets::generate_all().unwrap();
        let old = s.get(SecretName::S3SecretKey).to_string();
        let new = "Nw7pQ2mX9vL4kR8tB3yC6fH1Nw7pQ2mX9vL4kR8tB3yC6fH1";
        s.set_next(SecretName::S3SecretKey, new);
        assert_eq!(s.get(SecretName::S3SecretKey), old);
        assert_eq!(s.accepted(SecretName::S3SecretKey), [old.as_str(), new]);
        let back = Secrets::from_yaml("s.yaml", &s.to_yaml()).unwrap();
        assert_eq!(back, s);
        assert!(s.promote_next(SecretName::S3SecretKey));
        assert!(!s.promote_next(SecretName::S3SecretKey));
        assert_eq!(s.get(SecretName::S3SecretKey), new);
        assert_eq!(s.accepted(SecretName::S3SecretKey), [new, old.as_str()]);
        s.drop_previous(SecretName::S3SecretKey);
        assert_eq!(s.accepted(SecretName::S3SecretKey), [new]);
        assert!(Secrets::from_yaml("s.yaml", "next.nonsense: Zx8vQ2mN7pL4kR9tW3yB6cF1\n").is_err());
    }

    #[test]
    fn rotatable_names_are_the_ones_the_rotation_covers() {
        let r = SecretName::rotatable();
        assert!(r.contains(&SecretName::RedisPassword));
        assert!(!r.contains(&SecretName::SigningKey));
        assert!(r.contains(&SecretName::S3AccessKey));
        assert!(r.contains(&SecretName::LiGatePassword));
        assert!(!r.contains(&SecretName::KeyVaultAgeIdentity));
        assert!(SecretName::ALL
            .iter()
            .all(|n| !matches!(n.rotation(), Rotation::NotYet(_))));
    }

    #[test]
    fn pairs_rotate_together_and_companions_are_symmetric() {
        for n in SecretName::ALL {
            if let Some(c) = n.companion() {
                assert_eq!(c.companion(), Some(n), "{n:?}");
                assert_eq!(c.rotation(), n.rotation());
            }
        }
        assert_eq!(
            SecretName::LiS3SecretKey.companion(),
            Some(SecretName::LiS3AccessKey)
        );
        assert_eq!(SecretName::FormSecret.companion(), None);
    }

    #[test]
    fn retired_names_are_dropped_not_refused() {
        let s = Secrets::from_yaml(
            "secrets.yaml",
            "key_vault_api_key: Qm9vb1kR2f7w8xZp3LmN5tYc\nform_secret: Zx8vQ2mN7pL4kR9tW3yB6cF1\n",
        )
        .unwrap();
        assert!(!s.to_yaml().contains("key_vault_api_key"));
        assert!(!s.contains(SecretName::KeyVaultStoreApiKey));
        assert!(
            Secrets::from_yaml("secrets.yaml", "nonsense: Zx8vQ2mN7pL4kR9tW3yB6cF1\n").is_err()
        );
    }
}
