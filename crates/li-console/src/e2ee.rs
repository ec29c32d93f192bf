//! Decrypting a target's end-to-end encrypted messages from the LI replica with the key the target
//! escrowed.
//!
//! The chain, each step per the Matrix client-server spec (v1.x):
//!
//! 1. **Escrowed key.** The key vault holds either the target's *recovery key* (kind
//!    `recovery_key`: the secret-storage key, as the base58 text a client shows the user) or the
//!    *backup key* itself (kind `backup_key`: the base64 Curve25519 private key of the
//!    server-side key backup). See [`EscrowedKind`].
//! 2. **Secret storage (SSSS).** For a recovery key, the backup key is read from the target's
//!    global account data: `m.secret_storage.default_key`, `m.secret_storage.key.<id>`
//!    (algorithm `m.secret_storage.v1.aes-hmac-sha2`, checked with its `iv`/`mac`) and
//!    `m.megolm_backup.v1` (the backup key encrypted to one or more secret-storage keys).
//! 3. **Key backup.** Each row of `e2e_room_keys` holds one Megolm session encrypted to the
//!    backup's public key (`m.megolm_backup.v1.curve25519-aes-sha2`). [`BackupKey`] checks the
//!    backup's `auth_data.public_key` and decrypts the rows into [`BackedUpRoomKey`]s.
//! 4. **Megolm.** [`RoomKeys`] imports those sessions and decrypts `m.room.encrypted` event
//!    contents into [`Decrypted`] events, refusing plaintexts bound to another room.
//!
//! Everything here is pure: no database, no network. The console's other code reads the rows
//! (account data, the current `e2e_room_keys_versions` row, `e2e_room_keys`, events) and calls:
//!
//! ```text
//! let kind: EscrowedKind = "recovery_key".parse()?;
//! let key = backup_decryption_key(kind, &escrowed_text, &account_data)?;   // type -> content
//! key.check_backup(&version.algorithm, &version.auth_data)?;                // else NoBackup
//! let mut keys = RoomKeys::new();
//! for row in e2e_room_keys {
//!     keys.add(&row.room_id, &row.session_id, &key.decrypt_session(&row.session_data)?)?;
//! }
//! let decrypted = keys.decrypt(&event.room_id, &event.content)?;
//! ```
//!
//! Every failure is an [`Undecryptable`] whose `Display` is a sentence for the investigator.
//! No error message, and no `Debug` output of these types, contains key material (secret keys,
//! recovery keys, session keys, plaintexts of secrets); session ids and public keys are not
//! secret and are shown.
//!
//! Interoperability notes (checked against vodozemac, as used by Element, in
//! `tests/fixtures/make_e2ee_fixture.py` and the unit tests):
//!
//! - The backup scheme's HKDF uses libolm's salt (one zero byte in vodozemac). HMAC pads keys
//!   shorter than its block with zeros, so an empty salt, `[0]` and 32 zero bytes all give the
//!   same output; we write 32 zero bytes (RFC 5869's default).
//! - The backup scheme's `mac` is, in libolm and vodozemac, the first 8 bytes of
//!   HMAC-SHA256(mac key, *empty input*) instead of over the ciphertext as the spec's text
//!   says. Both forms are accepted (the check authenticates nothing either way; it only tells a
//!   wrong key from a corrupt row before AES-CBC is attempted).
//! - Base64 in these payloads may be padded or unpadded; both are accepted.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;

use aes::cipher::{block_padding::Pkcs7, BlockDecryptMut as _, KeyIvInit as _, StreamCipher as _};
use base64::engine::{general_purpose::GeneralPurpose, DecodePaddingMode, GeneralPurposeConfig};
use base64::Engine as _;
use hkdf::Hkdf;
use hmac::{Hmac, Mac as _};
use serde_json::Value;
use sha2::Sha256;
use subtle::ConstantTimeEq as _;
use vodozemac::megolm::{
    DecryptionError, ExportedSessionKey, InboundGroupSession, MegolmMessage, SessionConfig,
    SessionOrdering,
};
use vodozemac::{Curve25519PublicKey, Curve25519SecretKey};

/// Secret-storage algorithm (`m.secret_storage.key.<id>`.algorithm).
pub const SECRET_STORAGE_ALGORITHM: &str = "m.secret_storage.v1.aes-hmac-sha2";
/// Key-backup algorithm (`e2e_room_keys_versions.algorithm`).
pub const BACKUP_ALGORITHM: &str = "m.megolm_backup.v1.curve25519-aes-sha2";
/// Room-message encryption algorithm (event content and backed-up session).
pub const MEGOLM_ALGORITHM: &str = "m.megolm.v1.aes-sha2";
/// Name of the secret holding the backup key, and its account-data type.
pub const BACKUP_SECRET_NAME: &str = "m.megolm_backup.v1";

/// Recovery keys start with these two bytes (spec: "Recovery key").
const RECOVERY_KEY_PREFIX: [u8; 2] = [0x8B, 0x01];
/// Prefix + 32 key bytes + parity byte.
const RECOVERY_KEY_LEN: usize = 35;
/// Bitcoin's base58 alphabet, which recovery keys use.
const BASE58: &[u8; 58] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

/// Standard alphabet; decodes padded and unpadded input, encodes unpadded (as Matrix does).
const B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

type HmacSha256 = Hmac<Sha256>;
type Aes256Ctr = ctr::Ctr128BE<aes::Aes256>;
type Aes256CbcDec = cbc::Decryptor<aes::Aes256>;

/// What the key vault escrowed for a user (its `kind` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EscrowedKind {
    /// `recovery_key`: the secret-storage key, as base58 recovery-key text.
    RecoveryKey,
    /// `backup_key`: the backup's Curve25519 private key, base64.
    BackupKey,
}

impl EscrowedKind {
    /// The vault's name for this kind.
    pub fn as_str(self) -> &'static str {
        match self {
            EscrowedKind::RecoveryKey => "recovery_key",
            EscrowedKind::BackupKey => "backup_key",
        }
    }
}

impl fmt::Display for EscrowedKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EscrowedKind {
    type Err = Undecryptable;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "recovery_key" => Ok(EscrowedKind::RecoveryKey),
            "backup_key" => Ok(EscrowedKind::BackupKey),
            other => Err(Undecryptable::Malformed(format!(
                "unknown escrowed key kind {other:?} (expected recovery_key or backup_key)"
            ))),
        }
    }
}

/// Why something could not be decrypted. `Display` is a sentence for the investigator; no
/// variant carries key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Undecryptable {
    #[error(
        "no key is escrowed for the target (the key vault holds no recovery key or backup key)"
    )]
    NoEscrowedKey,
    #[error("the escrowed recovery key is not a valid Matrix recovery key: {0}")]
    BadRecoveryKey(String),
    #[error("the escrowed backup key is not a valid Curve25519 private key: {0}")]
    BadBackupKey(String),
    #[error("the target's secret storage cannot be used: {0}")]
    NoSecretStorage(String),
    #[error(
        "the escrowed recovery key does not open the target's secret storage (MAC mismatch): \
         the key is wrong, or secret storage was reset after the key was escrowed"
    )]
    SecretStorageMacMismatch,
    #[error("the target has no server-side key backup")]
    NoBackup,
    #[error(
        "the escrowed key does not match the target's current key backup (the public keys \
         differ): the backup was probably replaced after the key was escrowed"
    )]
    KeyDoesNotMatchBackup,
    #[error("a backed-up room key could not be decrypted with the escrowed backup key: {0}")]
    BackupDecryptionFailed(String),
    #[error("unsupported algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    #[error("no room key for session {session_id} in the target's key backup")]
    NoRoomKey { session_id: String },
    #[error(
        "the target's key backup holds session {session_id} only from message index \
         {first_known} on, and this message has index {message_index}"
    )]
    UnknownMessageIndex {
        session_id: String,
        first_known: u32,
        message_index: u32,
    },
    #[error(
        "the backup row for session {session_id} holds the key of another session \
         ({imported}); refusing it"
    )]
    SessionMismatch {
        session_id: String,
        imported: String,
    },
    #[error(
        "the decrypted event names a different room (or none) than the room it was found in; \
         refusing it as a possible replay"
    )]
    RoomMismatch,
    #[error("Megolm decryption failed: {0}")]
    Megolm(String),
    #[error("malformed data: {0}")]
    Malformed(String),
}

use Undecryptable as U;

// ---------------------------------------------------------------------------------------------
// Small helpers

/// Decodes base64 (padded or not). The error never echoes the input: it may be key material.
fn b64_decode(what: &str, s: &str) -> Result<Vec<u8>, String> {
    B64.decode(s.trim())
        .map_err(|_| format!("{what} is not valid base64"))
}

fn b64_array<const N: usize>(what: &str, s: &str) -> Result<[u8; N], String> {
    let v = b64_decode(what, s)?;
    <[u8; N]>::try_from(v.as_slice())
        .map_err(|_| format!("{what} is {} bytes, expected {N}", v.len()))
}

fn str_field<'a>(obj: &'a Value, field: &str, what: &str) -> Result<&'a str, Undecryptable> {
    obj.get(field)
        .and_then(Value::as_str)
        .ok_or_else(|| U::Malformed(format!("{what} has no string field {field:?}")))
}

/// Rows read as text columns may arrive as a JSON string holding the object; accept both.
fn as_object(v: &Value, what: &str) -> Result<Value, Undecryptable> {
    let v = match v {
        Value::String(s) => {
            serde_json::from_str(s).map_err(|e| U::Malformed(format!("{what} is not JSON: {e}")))?
        }
        other => other.clone(),
    };
    if v.is_object() {
        Ok(v)
    } else {
        Err(U::Malformed(format!("{what} is not a JSON object")))
    }
}

// ---------------------------------------------------------------------------------------------
// Recovery key

/// Decodes recovery-key text into the 32-byte secret-storage key.
///
/// Format: base58 of `0x8B 0x01 | key(32) | parity`, parity being the XOR of all preceding
/// bytes; whitespace (clients group it in fours) is ignored.
fn decode_recovery_key(text: &str) -> Result<[u8; 32], Undecryptable> {
    let digits = text
        .chars()
        .filter(|c| !c.is_whitespace())
        .enumerate()
        .map(|(i, c)| {
            BASE58
                .iter()
                .position(|&b| char::from(b) == c)
                .ok_or_else(|| {
                    // The position, not the character: the text is key material.
                    U::BadRecoveryKey(format!("character {} is not in the base58 alphabet", i + 1))
                })
        })
        .collect::<Result<Vec<usize>, _>>()?;
    if digits.is_empty() {
        return Err(U::NoEscrowedKey);
    }
    // Base conversion, little-endian accumulator; each leading '1' is a leading zero byte.
    let mut le: Vec<u8> = Vec::with_capacity(RECOVERY_KEY_LEN);
    for &d in &digits {
        let mut carry = d;
        for byte in le.iter_mut() {
            carry += usize::from(*byte) * 58;
            *byte = (carry & 0xFF) as u8;
            carry >>= 8;
        }
        while carry > 0 {
            le.push((carry & 0xFF) as u8);
            carry >>= 8;
        }
    }
    let zeros = digits.iter().take_while(|&&d| d == 0).count();
    le.extend(std::iter::repeat_n(0, zeros));
    le.reverse();
    let bytes = le;
    if bytes.len() != RECOVERY_KEY_LEN {
        return Err(U::BadRecoveryKey(format!(
            "it decodes to {} bytes, expected {RECOVERY_KEY_LEN}",
            bytes.len()
        )));
    }
    if bytes[..2] != RECOVERY_KEY_PREFIX {
        return Err(U::BadRecoveryKey(
            "it does not start with the recovery-key prefix 0x8B 0x01".into(),
        ));
    }
    let parity = bytes[..RECOVERY_KEY_LEN - 1].iter().fold(0u8, |p, b| p ^ b);
    if parity != bytes[RECOVERY_KEY_LEN - 1] {
        return Err(U::BadRecoveryKey(
            "its parity check fails (a character was mistyped or lost)".into(),
        ));
    }
    let mut key = [0u8; 32];
    key.copy_from_slice(&bytes[2..34]);
    Ok(key)
}

// ---------------------------------------------------------------------------------------------
// Secret storage (m.secret_storage.v1.aes-hmac-sha2)

/// HKDF-SHA256(ikm = key, salt = 32 zero bytes, info = secret name) -> AES key | HMAC key.
fn ssss_keys(key: &[u8; 32], name: &str) -> ([u8; 32], [u8; 32]) {
    let mut okm = [0u8; 64];
    Hkdf::<Sha256>::new(Some(&[0u8; 32]), key)
        .expand(name.as_bytes(), &mut okm)
        .expect("64 bytes is a valid HKDF-SHA256 output length");
    let mut aes_key = [0u8; 32];
    let mut mac_key = [0u8; 32];
    aes_key.copy_from_slice(&okm[..32]);
    mac_key.copy_from_slice(&okm[32..]);
    (aes_key, mac_key)
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

fn aes_ctr(key: &[u8; 32], iv: &[u8; 16], data: &mut [u8]) {
    Aes256Ctr::new(key.into(), iv.into()).apply_keystream(data);
}

/// The key description's check: encrypting 32 zero bytes under the secret name "" with the
/// description's `iv` must give its `mac`. `None` when the description has no check (old
/// clients); the secret's own MAC then decides.
fn ssss_key_check(key: &[u8; 32], description: &Value) -> Result<Option<bool>, Undecryptable> {
    let (Some(iv), Some(mac)) = (
        description.get("iv").and_then(Value::as_str),
        description.get("mac").and_then(Value::as_str),
    ) else {
        return Ok(None);
    };
    let iv: [u8; 16] = b64_array("the secret-storage key's iv", iv).map_err(U::Malformed)?;
    let mac = b64_decode("the secret-storage key's mac", mac).map_err(U::Malformed)?;
    let (aes_key, mac_key) = ssss_keys(key, "");
    let mut zeros = [0u8; 32];
    aes_ctr(&aes_key, &iv, &mut zeros);
    let expected = hmac_sha256(&mac_key, &zeros);
    Ok(Some(bool::from(expected.as_slice().ct_eq(&mac))))
}

/// Decrypts one encrypted secret `{iv, ciphertext, mac}`; the MAC is checked (constant time)
/// before anything is decrypted.
fn ssss_decrypt(key: &[u8; 32], name: &str, payload: &Value) -> Result<Vec<u8>, Undecryptable> {
    let what = format!("the encrypted secret {name}");
    let iv: [u8; 16] = b64_array("its iv", str_field(payload, "iv", &what)?)
        .map_err(|e| U::Malformed(format!("{what}: {e}")))?;
    let mut ciphertext = b64_decode("its ciphertext", str_field(payload, "ciphertext", &what)?)
        .map_err(|e| U::Malformed(format!("{what}: {e}")))?;
    let mac = b64_decode("its mac", str_field(payload, "mac", &what)?)
        .map_err(|e| U::Malformed(format!("{what}: {e}")))?;
    let (aes_key, mac_key) = ssss_keys(key, name);
    let mut hmac = HmacSha256::new_from_slice(&mac_key).expect("HMAC takes keys of any length");
    hmac.update(&ciphertext);
    hmac.verify_slice(&mac)
        .map_err(|_| U::SecretStorageMacMismatch)?;
    aes_ctr(&aes_key, &iv, &mut ciphertext);
    Ok(ciphertext)
}

/// Opens `m.megolm_backup.v1` with the secret-storage key.
///
/// The secret may be encrypted to several secret-storage keys; the default key is tried first,
/// then the others, and a key is used only if its description passes the key check (so the
/// investigator learns "wrong recovery key" rather than a misleading decryption error).
fn backup_key_from_secret_storage(
    ssss_key: &[u8; 32],
    account_data: &BTreeMap<String, Value>,
) -> Result<BackupKey, Undecryptable> {
    let secret = account_data.get(BACKUP_SECRET_NAME).ok_or_else(|| {
        U::NoSecretStorage(format!(
            "the account data has no {BACKUP_SECRET_NAME} secret (the backup key was never \
             stored in secret storage)"
        ))
    })?;
    let encrypted = secret
        .get("encrypted")
        .and_then(Value::as_object)
        .ok_or_else(|| U::Malformed(format!("{BACKUP_SECRET_NAME} has no \"encrypted\" object")))?;
    if encrypted.is_empty() {
        return Err(U::NoSecretStorage(format!(
            "{BACKUP_SECRET_NAME} is not encrypted to any secret-storage key"
        )));
    }
    let default = account_data
        .get("m.secret_storage.default_key")
        .and_then(|d| d.get("key"))
        .and_then(Value::as_str);
    let mut ids: Vec<&str> = Vec::with_capacity(encrypted.len());
    if let Some(d) = default.filter(|d| encrypted.contains_key(*d)) {
        ids.push(d);
    }
    ids.extend(
        encrypted
            .keys()
            .map(String::as_str)
            .filter(|id| Some(*id) != default),
    );

    let (mut mismatch, mut unsupported, mut missing) = (false, None, Vec::new());
    for id in ids {
        let Some(description) = account_data.get(&format!("m.secret_storage.key.{id}")) else {
            missing.push(id);
            continue;
        };
        let algorithm = description
            .get("algorithm")
            .and_then(Value::as_str)
            .unwrap_or("");
        if algorithm != SECRET_STORAGE_ALGORITHM {
            unsupported = Some(algorithm.to_owned());
            continue;
        }
        if ssss_key_check(ssss_key, description)? == Some(false) {
            mismatch = true;
            continue;
        }
        let plain = match ssss_decrypt(ssss_key, BACKUP_SECRET_NAME, &encrypted[id]) {
            Ok(p) => p,
            Err(U::SecretStorageMacMismatch) => {
                mismatch = true;
                continue;
            }
            Err(e) => return Err(e),
        };
        // The plaintext is the (unpadded) base64 of the backup private key.
        let text = String::from_utf8(plain).map_err(|_| {
            U::BadBackupKey("the secret in secret storage is not base64 text".into())
        })?;
        return BackupKey::from_base64(&text);
    }
    if mismatch {
        Err(U::SecretStorageMacMismatch)
    } else if let Some(algorithm) = unsupported {
        Err(U::UnsupportedAlgorithm(algorithm))
    } else {
        Err(U::NoSecretStorage(format!(
            "no description (m.secret_storage.key.<id>) for the secret-storage key(s) {}",
            missing.join(", ")
        )))
    }
}

/// From the escrowed key to the backup decryption key.
///
/// `account_data` is the target's global account data (Synapse table `account_data`,
/// `account_data_type` -> parsed `content`); it is only read for [`EscrowedKind::RecoveryKey`].
/// The result is not yet checked against the backup: call [`BackupKey::check_backup`].
pub fn backup_decryption_key(
    kind: EscrowedKind,
    key: &str,
    account_data: &BTreeMap<String, Value>,
) -> Result<BackupKey, Undecryptable> {
    if key.trim().is_empty() {
        return Err(U::NoEscrowedKey);
    }
    match kind {
        EscrowedKind::BackupKey => BackupKey::from_base64(key),
        EscrowedKind::RecoveryKey => {
            backup_key_from_secret_storage(&decode_recovery_key(key)?, account_data)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Key backup (m.megolm_backup.v1.curve25519-aes-sha2)

/// The backup's Curve25519 private key. `Debug` shows the public key only; the secret is
/// zeroized on drop (by vodozemac).
pub struct BackupKey {
    secret: Curve25519SecretKey,
    public: Curve25519PublicKey,
}

impl fmt::Debug for BackupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackupKey")
            .field("public_key", &self.public_key())
            .finish_non_exhaustive()
    }
}

impl BackupKey {
    fn from_base64(text: &str) -> Result<Self, Undecryptable> {
        let bytes: [u8; 32] = b64_array("it", text).map_err(U::BadBackupKey)?;
        let secret = Curve25519SecretKey::from_slice(&bytes);
        let public = Curve25519PublicKey::from(&secret);
        Ok(BackupKey { secret, public })
    }

    /// The public key, unpadded standard base64, as in the backup's `auth_data.public_key`.
    pub fn public_key(&self) -> String {
        self.public.to_base64()
    }

    /// Checks this key against the backup version (`e2e_room_keys_versions.algorithm` and
    /// `auth_data`). The caller reports [`Undecryptable::NoBackup`] when the target has no
    /// current backup version.
    pub fn check_backup(&self, algorithm: &str, auth_data: &Value) -> Result<(), Undecryptable> {
        if algorithm != BACKUP_ALGORITHM {
            return Err(U::UnsupportedAlgorithm(algorithm.to_owned()));
        }
        let auth_data = as_object(auth_data, "the backup's auth_data")?;
        let public = str_field(&auth_data, "public_key", "the backup's auth_data")?;
        let public: [u8; 32] =
            b64_array("the backup's public key", public).map_err(U::Malformed)?;
        // Public keys: no need for constant time, but it costs nothing.
        if bool::from(public.ct_eq(self.public.as_bytes())) {
            Ok(())
        } else {
            Err(U::KeyDoesNotMatchBackup)
        }
    }

    /// Decrypts one backed-up session (`e2e_room_keys.session_data`:
    /// `{ephemeral, ciphertext, mac}`, as an object or as its JSON text).
    ///
    /// shared = X25519(backup secret, ephemeral); HKDF-SHA256(shared, salt = zeros, info = "")
    /// -> AES-256 key | HMAC key | IV (80 bytes); AES-256-CBC with PKCS#7 padding.
    pub fn decrypt_session(&self, session_data: &Value) -> Result<BackedUpRoomKey, Undecryptable> {
        let data = as_object(session_data, "session_data")?;
        let bad = |e: String| U::Malformed(format!("session_data: {e}"));
        let ephemeral: [u8; 32] = b64_array(
            "its ephemeral key",
            str_field(&data, "ephemeral", "session_data")?,
        )
        .map_err(bad)?;
        let ciphertext = b64_decode(
            "its ciphertext",
            str_field(&data, "ciphertext", "session_data")?,
        )
        .map_err(bad)?;
        let mac = b64_decode("its mac", str_field(&data, "mac", "session_data")?).map_err(bad)?;

        let shared = self
            .secret
            .diffie_hellman(&Curve25519PublicKey::from_bytes(ephemeral));
        let mut okm = [0u8; 80];
        Hkdf::<Sha256>::new(Some(&[0u8; 32]), shared.as_bytes())
            .expand(b"", &mut okm)
            .expect("80 bytes is a valid HKDF-SHA256 output length");
        let (aes_key, rest) = okm.split_at(32);
        let (mac_key, iv) = rest.split_at(32);

        // libolm/vodozemac MAC the empty string (a known bug); the spec's text says the
        // ciphertext. Accept either, truncated to 8 bytes, compared in constant time.
        let libolm = hmac_sha256(mac_key, b"");
        let spec = hmac_sha256(mac_key, &ciphertext);
        let ok = mac.len() == 8 && bool::from(libolm[..8].ct_eq(&mac) | spec[..8].ct_eq(&mac));
        if !ok {
            return Err(U::BackupDecryptionFailed(
                "its MAC does not verify: it was encrypted to a different backup key".into(),
            ));
        }
        let plain = Aes256CbcDec::new(aes_key.into(), iv.into())
            .decrypt_padded_vec_mut::<Pkcs7>(&ciphertext)
            .map_err(|_| U::BackupDecryptionFailed("its AES-CBC padding is invalid".into()))?;
        let session: Value = serde_json::from_slice(&plain)
            .map_err(|_| U::BackupDecryptionFailed("the decrypted session is not JSON".into()))?;
        BackedUpRoomKey::from_json(&session)
    }
}

/// A decrypted backup row (spec: `SessionData`).
#[derive(Clone, PartialEq, Eq)]
pub struct BackedUpRoomKey {
    pub algorithm: String,
    /// Curve25519 key of the device that created the session.
    pub sender_key: String,
    /// Exported Megolm session key, base64. Secret: never printed.
    pub session_key: String,
    /// Keys the sending device claimed (`{"ed25519": ...}`).
    pub sender_claimed_keys: Value,
    /// Devices the key was forwarded through (empty if received from the sender directly).
    pub forwarding_curve25519_key_chain: Vec<String>,
}

impl fmt::Debug for BackedUpRoomKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackedUpRoomKey")
            .field("algorithm", &self.algorithm)
            .field("sender_key", &self.sender_key)
            .field("session_key", &"<redacted>")
            .field("sender_claimed_keys", &self.sender_claimed_keys)
            .field(
                "forwarding_curve25519_key_chain",
                &self.forwarding_curve25519_key_chain,
            )
            .finish()
    }
}

impl BackedUpRoomKey {
    fn from_json(v: &Value) -> Result<Self, Undecryptable> {
        const WHAT: &str = "the decrypted backed-up session";
        let algorithm = str_field(v, "algorithm", WHAT)?;
        if algorithm != MEGOLM_ALGORITHM {
            return Err(U::UnsupportedAlgorithm(algorithm.to_owned()));
        }
        let chain = match v.get("forwarding_curve25519_key_chain") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|k| k.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    U::Malformed(format!(
                        "{WHAT}: forwarding_curve25519_key_chain holds a non-string"
                    ))
                })?,
            Some(_) => {
                return Err(U::Malformed(format!(
                    "{WHAT}: forwarding_curve25519_key_chain is not a list"
                )))
            }
        };
        Ok(BackedUpRoomKey {
            algorithm: algorithm.to_owned(),
            sender_key: str_field(v, "sender_key", WHAT)?.to_owned(),
            session_key: str_field(v, "session_key", WHAT)?.to_owned(),
            sender_claimed_keys: v
                .get("sender_claimed_keys")
                .cloned()
                .unwrap_or_else(|| Value::Object(Default::default())),
            forwarding_curve25519_key_chain: chain,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Megolm

struct Session {
    inbound: InboundGroupSession,
    sender_key: String,
}

/// The imported Megolm sessions, by (room id, session id). `Debug` shows only the count.
#[derive(Default)]
pub struct RoomKeys {
    sessions: HashMap<(String, String), Session>,
}

impl fmt::Debug for RoomKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoomKeys")
            .field("sessions", &self.sessions.len())
            .finish()
    }
}

/// A decrypted room event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decrypted {
    /// The decrypted payload: `{type, content, room_id}`, as the sender encrypted it.
    pub event: Value,
    /// The message's position in its Megolm session.
    pub message_index: u32,
    pub session_id: String,
    /// Curve25519 key of the device that created the session, per the key backup.
    pub sender_key: String,
}

impl RoomKeys {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of imported sessions.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// The first message index decryptable in a session, if it is known.
    pub fn first_known_index(&self, room_id: &str, session_id: &str) -> Option<u32> {
        self.sessions
            .get(&(room_id.to_owned(), session_id.to_owned()))
            .map(|s| s.inbound.first_known_index())
    }

    /// Imports a backed-up session found under (`room_id`, `session_id`) in `e2e_room_keys`.
    ///
    /// Refuses a key that imports as another session than the row says (the session id is
    /// the session's public signing key, so this cannot happen by accident). When the same
    /// session is added twice, the copy reaching further back is kept.
    pub fn add(
        &mut self,
        room_id: &str,
        session_id: &str,
        key: &BackedUpRoomKey,
    ) -> Result<(), Undecryptable> {
        if key.algorithm != MEGOLM_ALGORITHM {
            return Err(U::UnsupportedAlgorithm(key.algorithm.clone()));
        }
        let exported = ExportedSessionKey::from_base64(&key.session_key).map_err(|_| {
            U::Malformed(format!(
                "the backed-up key for session {session_id} is not an exported Megolm session key"
            ))
        })?;
        let mut inbound = InboundGroupSession::import(&exported, SessionConfig::version_1());
        let imported = inbound.session_id();
        if imported != session_id {
            return Err(U::SessionMismatch {
                session_id: session_id.to_owned(),
                imported,
            });
        }
        let slot = (room_id.to_owned(), session_id.to_owned());
        if let Some(existing) = self.sessions.get_mut(&slot) {
            match inbound.compare(&mut existing.inbound) {
                SessionOrdering::Better => {}
                SessionOrdering::Equal | SessionOrdering::Worse => return Ok(()),
                SessionOrdering::Unconnected => {
                    return Err(U::Malformed(format!(
                        "two backed-up keys for session {session_id} disagree"
                    )))
                }
            }
        }
        self.sessions.insert(
            slot,
            Session {
                inbound,
                sender_key: key.sender_key.clone(),
            },
        );
        Ok(())
    }

    /// Decrypts the content of an `m.room.encrypted` event sent in `room_id`.
    pub fn decrypt(&mut self, room_id: &str, content: &Value) -> Result<Decrypted, Undecryptable> {
        const WHAT: &str = "the encrypted event content";
        let algorithm = str_field(content, "algorithm", WHAT)?;
        if algorithm != MEGOLM_ALGORITHM {
            return Err(U::UnsupportedAlgorithm(algorithm.to_owned()));
        }
        let session_id = str_field(content, "session_id", WHAT)?;
        let ciphertext = str_field(content, "ciphertext", WHAT)?;
        let session = self
            .sessions
            .get_mut(&(room_id.to_owned(), session_id.to_owned()))
            .ok_or_else(|| U::NoRoomKey {
                session_id: session_id.to_owned(),
            })?;
        let message = MegolmMessage::from_base64(ciphertext)
            .map_err(|e| U::Megolm(format!("the ciphertext is not a Megolm message: {e}")))?;
        let unknown_index = |first_known| U::UnknownMessageIndex {
            session_id: session_id.to_owned(),
            first_known,
            message_index: message.message_index(),
        };
        let first_known = session.inbound.first_known_index();
        if message.message_index() < first_known {
            return Err(unknown_index(first_known));
        }
        let plain = session.inbound.decrypt(&message).map_err(|e| match e {
            DecryptionError::UnknownMessageIndex(first, _) => unknown_index(first),
            // vodozemac's messages name the check that failed, never key bytes.
            other => U::Megolm(other.to_string()),
        })?;
        let event: Value = serde_json::from_slice(&plain.plaintext)
            .map_err(|_| U::Malformed("the decrypted payload is not JSON".into()))?;
        // Megolm binds nothing to the room; the sender's room_id inside the ciphertext does.
        if event.get("room_id").and_then(Value::as_str) != Some(room_id) {
            return Err(U::RoomMismatch);
        }
        if event.get("type").and_then(Value::as_str).is_none() || !event["content"].is_object() {
            return Err(U::Malformed(
                "the decrypted payload lacks a type or a content object".into(),
            ));
        }
        Ok(Decrypted {
            event,
            message_index: plain.message_index,
            session_id: session_id.to_owned(),
            sender_key: session.sender_key.clone(),
        })
    }
}

// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use aes::cipher::BlockEncryptMut as _;
    use serde_json::json;
    use vodozemac::megolm::{GroupSession, SessionKey};

    // --- encrypting side, as a client does (test only) ---

    fn b64(bytes: &[u8]) -> String {
        B64.encode(bytes)
    }

    fn recovery_key_text(key: &[u8; 32]) -> String {
        let mut raw = RECOVERY_KEY_PREFIX.to_vec();
        raw.extend_from_slice(key);
        raw.push(raw.iter().fold(0, |p, b| p ^ b));
        encode_base58(&raw)
    }

    fn encode_base58(raw: &[u8]) -> String {
        let mut digits: Vec<u8> = Vec::new(); // little-endian base 58
        for &byte in raw {
            let mut carry = usize::from(byte);
            for d in digits.iter_mut() {
                carry += usize::from(*d) << 8;
                *d = (carry % 58) as u8;
                carry /= 58;
            }
            while carry > 0 {
                digits.push((carry % 58) as u8);
                carry /= 58;
            }
        }
        let zeros = raw.iter().take_while(|&&b| b == 0).count();
        let text: String = std::iter::repeat_n('1', zeros)
            .chain(
                digits
                    .iter()
                    .rev()
                    .map(|&d| char::from(BASE58[usize::from(d)])),
            )
            .collect();
        // Grouped in fours, as clients show it.
        text.as_bytes()
            .chunks(4)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn ssss_encrypt(key: &[u8; 32], name: &str, plaintext: &[u8], iv: [u8; 16]) -> Value {
        let (aes_key, mac_key) = ssss_keys(key, name);
        let mut ct = plaintext.to_vec();
        aes_ctr(&aes_key, &iv, &mut ct);
        json!({"iv": b64(&iv), "ciphertext": b64(&ct), "mac": b64(&hmac_sha256(&mac_key, &ct))})
    }

    /// Account data as a client sets up secret storage holding `backup_secret`.
    fn account_data(ssss: &[u8; 32], backup_secret: &[u8; 32]) -> BTreeMap<String, Value> {
        let mut iv = [7u8; 16];
        iv[8] &= 0x7F;
        let check = ssss_encrypt(ssss, "", &[0u8; 32], iv);
        let enc = ssss_encrypt(
            ssss,
            BACKUP_SECRET_NAME,
            b64(backup_secret).as_bytes(),
            [9; 16],
        );
        BTreeMap::from([
            (
                "m.secret_storage.default_key".into(),
                json!({"key": "KEYID"}),
            ),
            (
                "m.secret_storage.key.KEYID".into(),
                json!({"algorithm": SECRET_STORAGE_ALGORITHM, "iv": check["iv"], "mac": check["mac"]}),
            ),
            (
                BACKUP_SECRET_NAME.into(),
                json!({"encrypted": {"KEYID": enc}}),
            ),
            ("m.direct".into(), json!({})),
        ])
    }

    /// Encrypts to a backup public key as libolm/vodozemac do (`spec_mac`: MAC the ciphertext
    /// as the spec's text says instead).
    fn backup_encrypt(public: &Curve25519PublicKey, plaintext: &[u8], spec_mac: bool) -> Value {
        let ephemeral = Curve25519SecretKey::new();
        let shared = ephemeral.diffie_hellman(public);
        let mut okm = [0u8; 80];
        Hkdf::<Sha256>::new(Some(&[0]), shared.as_bytes())
            .expand(b"", &mut okm)
            .unwrap();
        let ct = cbc::Encryptor::<aes::Aes256>::new(okm[..32].into(), okm[64..].into())
            .encrypt_padded_vec_mut::<Pkcs7>(plaintext);
        let mac = hmac_sha256(&okm[32..64], if spec_mac { &ct } else { b"" });
        json!({
            "ephemeral": Curve25519PublicKey::from(&ephemeral).to_base64(),
            "ciphertext": b64(&ct),
            "mac": b64(&mac[..8]),
        })
    }

    fn session_json(inbound: &mut InboundGroupSession, at: u32) -> Value {
        json!({
            "algorithm": MEGOLM_ALGORITHM,
            "sender_key": "SENDERCURVE",
            "session_key": inbound.export_at(at).unwrap().to_base64(),
            "sender_claimed_keys": {"ed25519": "SENDERED"},
            "forwarding_curve25519_key_chain": [],
        })
    }

    fn event(group: &mut GroupSession, room_id: &str, body: &str) -> Value {
        let plain = json!({"type": "m.room.message", "content": {"msgtype": "m.text", "body": body}, "room_id": room_id});
        let msg = group.encrypt(plain.to_string().as_bytes());
        json!({
            "algorithm": MEGOLM_ALGORITHM,
            "sender_key": "SENDERCURVE",
            "ciphertext": msg.to_base64(),
            "session_id": group.session_id(),
            "device_id": "DEVICE",
        })
    }

    fn backup_key(secret: &[u8; 32]) -> BackupKey {
        backup_decryption_key(EscrowedKind::BackupKey, &b64(secret), &BTreeMap::new()).unwrap()
    }

    // --- recovery key ---

    #[test]
    fn recovery_key_decodes_with_and_without_spaces() {
        let key: [u8; 32] = core::array::from_fn(|i| (i * 37 + 1) as u8);
        let text = recovery_key_text(&key);
        assert!(text.contains(' '));
        assert_eq!(decode_recovery_key(&text).unwrap(), key);
        assert_eq!(decode_recovery_key(&text.replace(' ', "")).unwrap(), key);
        assert_eq!(decode_recovery_key(&format!("  {text}\n")).unwrap(), key);
        // All-zero key: leading zero bytes of the key itself survive the base conversion.
        assert_eq!(
            decode_recovery_key(&recovery_key_text(&[0; 32])).unwrap(),
            [0; 32]
        );
    }

    #[test]
    fn recovery_key_known_vector() {
        // Generated by tests/e2e/test_escrow.py's recovery_key_text(bytes(range(32))).
        let text = "EsSz ykH7 LCZx 7Cae cmKD wcmY JRXi Ybtu 8iQ3 t8Ez nRwK pUY1";
        let key: [u8; 32] = core::array::from_fn(|i| i as u8);
        assert_eq!(recovery_key_text(&key), text);
        assert_eq!(decode_recovery_key(text).unwrap(), key);
    }

    #[test]
    fn recovery_key_errors() {
        let key = [42u8; 32];
        let text = recovery_key_text(&key).replace(' ', "");
        // Parity: flip the parity byte.
        let mut raw = RECOVERY_KEY_PREFIX.to_vec();
        raw.extend_from_slice(&key);
        let parity = raw.iter().fold(0, |p, b| p ^ b);
        raw.push(parity ^ 1);
        let err = decode_recovery_key(&encode_base58(&raw)).unwrap_err();
        assert!(
            matches!(&err, U::BadRecoveryKey(m) if m.contains("parity")),
            "{err}"
        );
        // Prefix.
        let mut raw = vec![0x8B, 0x02];
        raw.extend_from_slice(&key);
        raw.push(raw.iter().fold(0, |p, b| p ^ b));
        let err = decode_recovery_key(&encode_base58(&raw)).unwrap_err();
        assert!(
            matches!(&err, U::BadRecoveryKey(m) if m.contains("prefix")),
            "{err}"
        );
        // Length: a character dropped.
        let err = decode_recovery_key(&text[..40]).unwrap_err();
        assert!(
            matches!(&err, U::BadRecoveryKey(m) if m.contains("bytes")),
            "{err}"
        );
        // Alphabet: '0' and 'l' are not base58; the message gives a position, not the text.
        let bad = format!("{}0{}", &text[..5], &text[6..]);
        let err = decode_recovery_key(&bad).unwrap_err();
        assert_eq!(
            err,
            U::BadRecoveryKey("character 6 is not in the base58 alphabet".into())
        );
        // A typo that keeps the length: caught by the parity (or the prefix).
        let typo = format!(
            "{}{}{}",
            &text[..20],
            if &text[20..21] == "a" { "b" } else { "a" },
            &text[21..]
        );
        assert!(matches!(
            decode_recovery_key(&typo),
            Err(U::BadRecoveryKey(_))
        ));
        assert_eq!(
            backup_decryption_key(EscrowedKind::RecoveryKey, "  ", &BTreeMap::new()).unwrap_err(),
            U::NoEscrowedKey
        );
    }

    // --- secret storage ---

    #[test]
    fn recovery_key_opens_secret_storage() {
        let (ssss, backup) = ([1u8; 32], [2u8; 32]);
        let data = account_data(&ssss, &backup);
        let key =
            backup_decryption_key(EscrowedKind::RecoveryKey, &recovery_key_text(&ssss), &data)
                .unwrap();
        assert_eq!(key.public_key(), backup_key(&backup).public_key());
        // Debug shows the public key only.
        let debug = format!("{key:?}");
        assert!(
            debug.contains(&key.public_key()) && !debug.contains(&b64(&backup)),
            "{debug}"
        );
    }

    #[test]
    fn wrong_recovery_key_is_a_mac_mismatch() {
        let data = account_data(&[1; 32], &[2; 32]);
        let err = backup_decryption_key(
            EscrowedKind::RecoveryKey,
            &recovery_key_text(&[3; 32]),
            &data,
        )
        .unwrap_err();
        assert_eq!(err, U::SecretStorageMacMismatch);
        // Without the key check in the description, the secret's own MAC refuses it too.
        let mut data = data;
        data.insert(
            "m.secret_storage.key.KEYID".into(),
            json!({"algorithm": SECRET_STORAGE_ALGORITHM}),
        );
        let err = backup_decryption_key(
            EscrowedKind::RecoveryKey,
            &recovery_key_text(&[3; 32]),
            &data,
        )
        .unwrap_err();
        assert_eq!(err, U::SecretStorageMacMismatch);
    }

    #[test]
    fn tampered_secret_is_refused_before_decryption() {
        let ssss = [1u8; 32];
        let mut data = account_data(&ssss, &[2; 32]);
        let enc = &mut data.get_mut(BACKUP_SECRET_NAME).unwrap()["encrypted"]["KEYID"];
        let mut ct = B64.decode(enc["ciphertext"].as_str().unwrap()).unwrap();
        ct[0] ^= 1;
        enc["ciphertext"] = json!(b64(&ct));
        let err =
            backup_decryption_key(EscrowedKind::RecoveryKey, &recovery_key_text(&ssss), &data)
                .unwrap_err();
        assert_eq!(err, U::SecretStorageMacMismatch);
    }

    #[test]
    fn secret_storage_missing_pieces() {
        let ssss = [1u8; 32];
        let text = recovery_key_text(&ssss);
        let full = account_data(&ssss, &[2; 32]);
        let without = |k: &str| {
            let mut d = full.clone();
            d.remove(k);
            backup_decryption_key(EscrowedKind::RecoveryKey, &text, &d).unwrap_err()
        };
        assert!(matches!(without(BACKUP_SECRET_NAME), U::NoSecretStorage(_)));
        assert!(
            matches!(without("m.secret_storage.key.KEYID"), U::NoSecretStorage(m) if m.contains("KEYID"))
        );
        // The default key pointer is only a preference.
        assert!(backup_decryption_key(EscrowedKind::RecoveryKey, &text, &{
            let mut d = full.clone();
            d.remove("m.secret_storage.default_key");
            d
        })
        .is_ok());
        let mut d = full.clone();
        d.get_mut("m.secret_storage.key.KEYID").unwrap()["algorithm"] =
            json!("m.secret_storage.v2");
        assert_eq!(
            backup_decryption_key(EscrowedKind::RecoveryKey, &text, &d).unwrap_err(),
            U::UnsupportedAlgorithm("m.secret_storage.v2".into())
        );
    }

    #[test]
    fn secret_encrypted_to_several_keys_uses_the_matching_one() {
        let (old, new, backup) = ([5u8; 32], [6u8; 32], [2u8; 32]);
        let mut data = account_data(&new, &backup);
        // A second, older key that is not the default: the recovery key for it still works.
        let check = ssss_encrypt(&old, "", &[0; 32], [1; 16]);
        data.insert(
            "m.secret_storage.key.OLD".into(),
            json!({"algorithm": SECRET_STORAGE_ALGORITHM, "iv": check["iv"], "mac": check["mac"]}),
        );
        data.get_mut(BACKUP_SECRET_NAME).unwrap()["encrypted"]["OLD"] =
            ssss_encrypt(&old, BACKUP_SECRET_NAME, b64(&backup).as_bytes(), [3; 16]);
        for k in [old, new] {
            let key =
                backup_decryption_key(EscrowedKind::RecoveryKey, &recovery_key_text(&k), &data)
                    .unwrap();
            assert_eq!(key.public_key(), backup_key(&backup).public_key());
        }
    }

    #[test]
    fn padded_and_unpadded_base64_are_both_accepted() {
        let secret = [9u8; 32];
        let padded = base64::engine::general_purpose::STANDARD.encode(secret);
        assert!(padded.ends_with('='));
        let a = backup_decryption_key(EscrowedKind::BackupKey, &padded, &BTreeMap::new()).unwrap();
        assert_eq!(a.public_key(), backup_key(&secret).public_key());
        assert!(!a.public_key().ends_with('='));
        let err = backup_decryption_key(EscrowedKind::BackupKey, "not base64!", &BTreeMap::new())
            .unwrap_err();
        assert!(
            matches!(&err, U::BadBackupKey(m) if !m.contains("not base64!")),
            "{err}"
        );
        let err = backup_decryption_key(EscrowedKind::BackupKey, &b64(&[1; 31]), &BTreeMap::new())
            .unwrap_err();
        assert!(matches!(err, U::BadBackupKey(_)));
    }

    #[test]
    fn escrowed_kind_parses() {
        assert_eq!(
            "recovery_key".parse::<EscrowedKind>().unwrap(),
            EscrowedKind::RecoveryKey
        );
        assert_eq!(
            "backup_key".parse::<EscrowedKind>().unwrap(),
            EscrowedKind::BackupKey
        );
        assert!("passphrase".parse::<EscrowedKind>().is_err());
        assert_eq!(EscrowedKind::BackupKey.to_string(), "backup_key");
    }

    // --- backup ---

    #[test]
    fn hkdf_salts_libolm_empty_and_zeros_agree() {
        // Why it does not matter which of the spec/libolm salts we use: HMAC zero-pads keys.
        let ikm = [0x5Au8; 32];
        let out = |salt: Option<&[u8]>| {
            let mut okm = [0u8; 80];
            Hkdf::<Sha256>::new(salt, &ikm)
                .expand(b"", &mut okm)
                .unwrap();
            okm
        };
        assert_eq!(out(Some(&[0])), out(None));
        assert_eq!(out(Some(&[0; 32])), out(None));
        assert_eq!(out(Some(&[])), out(None));
        assert_ne!(out(Some(&[1])), out(None));
    }

    #[test]
    fn check_backup_compares_public_keys() {
        let key = backup_key(&[2; 32]);
        let auth = json!({"public_key": key.public_key(), "signatures": {}});
        key.check_backup(BACKUP_ALGORITHM, &auth).unwrap();
        key.check_backup(BACKUP_ALGORITHM, &json!(auth.to_string()))
            .unwrap();
        let other = json!({"public_key": backup_key(&[3; 32]).public_key()});
        assert_eq!(
            key.check_backup(BACKUP_ALGORITHM, &other).unwrap_err(),
            U::KeyDoesNotMatchBackup
        );
        assert_eq!(
            key.check_backup("org.matrix.msc3270.v1.aes-hmac-sha2", &auth)
                .unwrap_err(),
            U::UnsupportedAlgorithm("org.matrix.msc3270.v1.aes-hmac-sha2".into())
        );
        assert!(matches!(
            key.check_backup(BACKUP_ALGORITHM, &json!({})),
            Err(U::Malformed(_))
        ));
    }

    #[test]
    fn backup_round_trip_and_wrong_key() {
        let key = backup_key(&[2; 32]);
        let group = GroupSession::new(SessionConfig::version_1());
        let mut inbound =
            InboundGroupSession::new(&group.session_key(), SessionConfig::version_1());
        let plain = session_json(&mut inbound, 0);
        for spec_mac in [false, true] {
            let row = backup_encrypt(&key.public, plain.to_string().as_bytes(), spec_mac);
            let got = key.decrypt_session(&row).unwrap();
            assert_eq!(got.session_key, plain["session_key"].as_str().unwrap());
            assert_eq!(got.sender_key, "SENDERCURVE");
            assert_eq!(got.sender_claimed_keys, json!({"ed25519": "SENDERED"}));
            // As the text column holds it.
            assert_eq!(key.decrypt_session(&json!(row.to_string())).unwrap(), got);
            let debug = format!("{got:?}");
            assert!(
                !debug.contains(&got.session_key) && debug.contains("redacted"),
                "{debug}"
            );
            // Another key: refused by the MAC, before AES.
            let err = backup_key(&[3; 32]).decrypt_session(&row).unwrap_err();
            assert!(
                matches!(&err, U::BackupDecryptionFailed(m) if m.contains("MAC")),
                "{err}"
            );
        }
        // Unsupported session algorithm inside.
        let mut v2 = plain.clone();
        v2["algorithm"] = json!("m.megolm.v2.aes-sha2");
        let row = backup_encrypt(&key.public, v2.to_string().as_bytes(), false);
        assert_eq!(
            key.decrypt_session(&row).unwrap_err(),
            U::UnsupportedAlgorithm("m.megolm.v2.aes-sha2".into())
        );
        assert!(matches!(
            key.decrypt_session(&json!({"ephemeral": "x"})),
            Err(U::Malformed(_))
        ));
    }

    // --- megolm ---

    /// Keys for a session as its creator exported it at `at` (`key`: the session key taken
    /// before any message was encrypted).
    fn keys_for(room: &str, session_id: &str, key: &SessionKey, at: u32) -> RoomKeys {
        let mut inbound = InboundGroupSession::new(key, SessionConfig::version_1());
        let key = BackedUpRoomKey::from_json(&session_json(&mut inbound, at)).unwrap();
        let mut keys = RoomKeys::new();
        keys.add(room, session_id, &key).unwrap();
        keys
    }

    #[test]
    fn megolm_round_trip_through_the_backup() {
        let backup = backup_key(&[2; 32]);
        let mut group = GroupSession::new(SessionConfig::version_1());
        let mut inbound =
            InboundGroupSession::new(&group.session_key(), SessionConfig::version_1());
        let row = backup_encrypt(
            &backup.public,
            session_json(&mut inbound, 0).to_string().as_bytes(),
            false,
        );
        let mut keys = RoomKeys::new();
        keys.add(
            "!r:x",
            &group.session_id(),
            &backup.decrypt_session(&row).unwrap(),
        )
        .unwrap();
        assert_eq!(keys.len(), 1);
        let events: Vec<Value> = (0..3)
            .map(|i| event(&mut group, "!r:x", &format!("m{i}")))
            .collect();
        // Out of order on purpose: the session keeps its earliest ratchet.
        for i in [2usize, 0, 1] {
            let d = keys.decrypt("!r:x", &events[i]).unwrap();
            assert_eq!(d.message_index, i as u32);
            assert_eq!(d.session_id, group.session_id());
            assert_eq!(d.sender_key, "SENDERCURVE");
            assert_eq!(d.event["content"]["body"], format!("m{i}"));
            assert_eq!(d.event["type"], "m.room.message");
        }
    }

    #[test]
    fn unknown_session_and_room_binding() {
        let mut group = GroupSession::new(SessionConfig::version_1());
        let mut keys = keys_for("!r:x", &group.session_id(), &group.session_key(), 0);
        let other = GroupSession::new(SessionConfig::version_1());
        let mut other_content = event(&mut group, "!r:x", "x");
        other_content["session_id"] = json!(other.session_id());
        let err = keys.decrypt("!r:x", &other_content).unwrap_err();
        assert_eq!(
            err,
            U::NoRoomKey {
                session_id: other.session_id()
            }
        );
        assert_eq!(
            err.to_string(),
            format!(
                "no room key for session {} in the target's key backup",
                other.session_id()
            )
        );
        // The key is bound to its room: the same event seen in another room has no key.
        let content = event(&mut group, "!r:x", "hello");
        assert!(matches!(
            keys.decrypt("!s:x", &content),
            Err(U::NoRoomKey { .. })
        ));
        // A payload naming another room, replayed into this one: refused.
        let replay = event(&mut group, "!elsewhere:x", "moved");
        assert_eq!(keys.decrypt("!r:x", &replay).unwrap_err(), U::RoomMismatch);
        let olm = json!({"algorithm": "m.olm.v1.curve25519-aes-sha2", "ciphertext": {}});
        assert!(matches!(
            keys.decrypt("!r:x", &olm),
            Err(U::UnsupportedAlgorithm(_))
        ));
        let mut garbage = content.clone();
        garbage["ciphertext"] = json!("AAAA");
        assert!(matches!(keys.decrypt("!r:x", &garbage), Err(U::Megolm(_))));
    }

    #[test]
    fn earlier_index_than_the_backup_knows() {
        let mut group = GroupSession::new(SessionConfig::version_1());
        let (sid, sk) = (group.session_id(), group.session_key());
        let early: Vec<Value> = (0..3)
            .map(|i| event(&mut group, "!r:x", &format!("m{i}")))
            .collect();
        let mut keys = keys_for("!r:x", &sid, &sk, 0);
        let mut late = keys_for("!r:x", &sid, &sk, 2);
        assert_eq!(late.first_known_index("!r:x", &group.session_id()), Some(2));
        assert_eq!(
            late.decrypt("!r:x", &early[1]).unwrap_err(),
            U::UnknownMessageIndex {
                session_id: group.session_id(),
                first_known: 2,
                message_index: 1
            }
        );
        assert_eq!(late.decrypt("!r:x", &early[2]).unwrap().message_index, 2);
        // Adding the later copy to the earlier keeps the earlier; the other way round upgrades.
        let mut inbound = InboundGroupSession::new(&sk, SessionConfig::version_1());
        let at0 = BackedUpRoomKey::from_json(&session_json(&mut inbound, 0)).unwrap();
        let at2 = BackedUpRoomKey::from_json(&session_json(&mut inbound, 2)).unwrap();
        keys.add("!r:x", &group.session_id(), &at2).unwrap();
        assert_eq!(keys.first_known_index("!r:x", &group.session_id()), Some(0));
        late.add("!r:x", &group.session_id(), &at0).unwrap();
        assert_eq!(late.decrypt("!r:x", &early[0]).unwrap().message_index, 0);
    }

    #[test]
    fn add_refuses_a_key_filed_under_another_session() {
        let a = GroupSession::new(SessionConfig::version_1());
        let b = GroupSession::new(SessionConfig::version_1());
        let mut inbound = InboundGroupSession::new(&a.session_key(), SessionConfig::version_1());
        let key = BackedUpRoomKey::from_json(&session_json(&mut inbound, 0)).unwrap();
        let err = RoomKeys::new()
            .add("!r:x", &b.session_id(), &key)
            .unwrap_err();
        assert_eq!(
            err,
            U::SessionMismatch {
                session_id: b.session_id(),
                imported: a.session_id()
            }
        );
        let mut bad = key.clone();
        bad.session_key = "AAAA".into();
        assert!(matches!(
            RoomKeys::new().add("!r:x", &a.session_id(), &bad),
            Err(U::Malformed(_))
        ));
    }

    #[test]
    fn messages_never_contain_key_material() {
        let secret = [2u8; 32];
        let errors = [
            backup_decryption_key(
                EscrowedKind::BackupKey,
                &format!("{}!", b64(&secret)),
                &BTreeMap::new(),
            )
            .unwrap_err(),
            backup_decryption_key(
                EscrowedKind::RecoveryKey,
                &format!("0{}", recovery_key_text(&secret)),
                &BTreeMap::new(),
            )
            .unwrap_err(),
        ];
        for e in errors {
            let text = format!("{e} {e:?}");
            assert!(!text.contains(&b64(&secret)[..10]), "{text}");
        }
    }
}
