//! Encrypted attachments: the `EncryptedFile` metadata (Matrix spec, v2, A256CTR JWK, SHA-256 of
//! the ciphertext) and the Curve25519 `encrypted_body` the matrix-content-scanner API accepts
//! (libolm-compatible PkEncryption, vodozemac's `insecure-pk-encryption`).

use aes::cipher::{KeyIvInit, StreamCipher};
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use base64::Engine;
use serde_json::Value;
use sha2::{Digest, Sha256};
use vodozemac::pk_encryption::{Message, PkDecryption};
use vodozemac::Curve25519SecretKey;

type Aes256Ctr = ctr::Ctr128BE<aes::Aes256>;

/// Decodes base64 with or without padding, standard or URL-safe alphabet (clients differ).
fn b64(s: &str) -> Option<Vec<u8>> {
    let t = s.trim_end_matches('=');
    STANDARD_NO_PAD
        .decode(t)
        .or_else(|_| URL_SAFE_NO_PAD.decode(t))
        .ok()
}

/// A validated `file` object of an encrypted attachment.
#[derive(Debug, Clone)]
pub struct EncryptedFile {
    /// `server_name/media_id`.
    pub media_path: String,
    key: [u8; 32],
    iv: [u8; 16],
    sha256: [u8; 32],
    /// Identifies key + IV + hash for the verdict cache (never the key itself).
    pub cache_tag: String,
}

/// Why a request body was refused: (reason code, info).
pub type BodyError = (&'static str, String);

const MALFORMED: &str = "MCS_MALFORMED_JSON";
const FAILED_TO_DECRYPT: &str = "MCS_MEDIA_FAILED_TO_DECRYPT";

/// Validates the metadata as the reference does (its JSON schema plus the key_ops check).
pub fn parse_metadata(body: &Value) -> Result<EncryptedFile, BodyError> {
    let bad = |m: &str| (MALFORMED, m.to_string());
    let file = body
        .get("file")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("'file' is a required property"))?;
    let s = |k: &str| -> Result<&str, BodyError> {
        file.get(k)
            .and_then(Value::as_str)
            .ok_or_else(|| bad(&format!("'{k}' is a required string property of 'file'")))
    };
    if s("v")? != "v2" {
        return Err(bad("'v2' was expected"));
    }
    let url = s("url")?;
    let media_path = url
        .strip_prefix("mxc://")
        .filter(|p| p.split('/').count() == 2 && !p.ends_with('/') && !p.starts_with('/'))
        .ok_or_else(|| bad("'url' must be an mxc://server/media_id URL"))?
        .to_string();
    let iv_s = s("iv")?;
    let hash_s = file
        .get("hashes")
        .and_then(|h| h.get("sha256"))
        .and_then(Value::as_str)
        .ok_or_else(|| bad("'hashes.sha256' is required"))?;
    let key = file
        .get("key")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("'key' is a required property"))?;
    let ks = |k: &str| key.get(k).and_then(Value::as_str);
    if ks("alg") != Some("A256CTR") {
        return Err(bad("'A256CTR' was expected"));
    }
    if ks("kty") != Some("oct") {
        return Err(bad("'oct' was expected"));
    }
    if key.get("ext") != Some(&Value::Bool(true)) {
        return Err(bad("True was expected"));
    }
    let ops: Vec<&str> = key
        .get("key_ops")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("'key_ops' is a required property"))?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    if !(ops.contains(&"encrypt") && ops.contains(&"decrypt")) {
        return Err(bad(
            "key_ops must contain at least \"encrypt\" and \"decrypt\"",
        ));
    }
    let k = ks("k").ok_or_else(|| bad("'k' is a required property"))?;
    let undecodable = |what: &str| (FAILED_TO_DECRYPT, format!("invalid {what}"));
    let key: [u8; 32] = b64(k)
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| undecodable("key"))?;
    let iv: [u8; 16] = b64(iv_s)
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| undecodable("iv"))?;
    let sha256: [u8; 32] = b64(hash_s)
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| undecodable("sha256 hash"))?;
    let mut tag = Sha256::new();
    tag.update(key);
    tag.update(iv);
    tag.update(sha256);
    Ok(EncryptedFile {
        media_path,
        key,
        iv,
        sha256,
        cache_tag: hex(&tag.finalize()),
    })
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Decrypts a stream chunk by chunk and checks the ciphertext hash at the end.
pub struct Decryptor {
    cipher: Aes256Ctr,
    hasher: Sha256,
    expected: [u8; 32],
}

impl Decryptor {
    pub fn new(f: &EncryptedFile) -> Self {
        Decryptor {
            cipher: Aes256Ctr::new(&f.key.into(), &f.iv.into()),
            hasher: Sha256::new(),
            expected: f.sha256,
        }
    }

    /// Decrypts `chunk` in place.
    pub fn update(&mut self, chunk: &mut [u8]) {
        self.hasher.update(&*chunk);
        self.cipher.apply_keystream(chunk);
    }

    /// Whether the ciphertext matched the hash in the metadata.
    pub fn verify(self) -> Result<(), BodyError> {
        if self.hasher.finalize().as_slice() == self.expected {
            Ok(())
        } else {
            Err((
                FAILED_TO_DECRYPT,
                "the file's SHA-256 does not match the metadata".into(),
            ))
        }
    }
}

/// The scanner's Curve25519 key pair for `encrypted_body`.
pub struct RequestKey {
    decryption: PkDecryption,
}

impl RequestKey {
    /// From the base64 secret key file `mxstack init` generates.
    pub fn from_base64(secret: &str) -> Result<RequestKey, String> {
        let raw: [u8; 32] = STANDARD
            .decode(secret.trim())
            .ok()
            .or_else(|| b64(secret.trim()))
            .and_then(|v| v.try_into().ok())
            .ok_or("the request secret must be 32 bytes of base64")?;
        Ok(RequestKey {
            decryption: PkDecryption::from_key(Curve25519SecretKey::from_slice(&raw)),
        })
    }

    pub fn public_key(&self) -> String {
        self.decryption.public_key().to_base64()
    }

    /// Decrypts an `encrypted_body` object to the JSON it carries.
    pub fn decrypt_body(&self, enc: &Value) -> Result<Value, BodyError> {
        let field = |k: &str| {
            enc.get(k)
                .and_then(Value::as_str)
                .ok_or((FAILED_TO_DECRYPT, format!("encrypted_body lacks '{k}'")))
        };
        let msg = Message::from_base64(field("ciphertext")?, field("mac")?, field("ephemeral")?)
            .map_err(|e| (FAILED_TO_DECRYPT, e.to_string()))?;
        let plain = self
            .decryption
            .decrypt(&msg)
            .map_err(|e| (FAILED_TO_DECRYPT, e.to_string()))?;
        serde_json::from_slice(&plain).map_err(|e| (FAILED_TO_DECRYPT, e.to_string()))
    }
}

/// The metadata of a POST body: in clear, or inside `encrypted_body` (which wins).
pub fn metadata_from_body(body: &[u8], key: &RequestKey) -> Result<EncryptedFile, BodyError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| (MALFORMED, e.to_string()))?;
    if !v.is_object() {
        return Err((MALFORMED, "Body must be a dictionary".into()));
    }
    let v = match v.get("encrypted_body") {
        Some(enc) => key.decrypt_body(enc)?,
        None => v,
    };
    parse_metadata(&v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use vodozemac::pk_encryption::PkEncryption;

    fn encrypt(plain: &[u8]) -> (Vec<u8>, Value) {
        let key = [7u8; 32];
        let iv = [1u8, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 0, 0, 0, 0];
        let mut data = plain.to_vec();
        Aes256Ctr::new(&key.into(), &iv.into()).apply_keystream(&mut data);
        let hash = Sha256::digest(&data);
        let meta = json!({"file": {
            "v": "v2", "url": "mxc://acme.test/abc", "iv": STANDARD_NO_PAD.encode(iv),
            "hashes": {"sha256": STANDARD_NO_PAD.encode(hash)},
            "key": {"alg": "A256CTR", "kty": "oct", "ext": true, "key_ops": ["encrypt", "decrypt"],
                    "k": URL_SAFE_NO_PAD.encode(key)}
        }});
        (data, meta)
    }

    #[test]
    fn decrypts_in_chunks_and_checks_the_hash() {
        let plain: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let (cipher, meta) = encrypt(&plain);
        let f = parse_metadata(&meta).unwrap();
        assert_eq!(f.media_path, "acme.test/abc");
        let mut d = Decryptor::new(&f);
        let mut out = Vec::new();
        for chunk in cipher.chunks(7000) {
            let mut c = chunk.to_vec();
            d.update(&mut c);
            out.extend(c);
        }
        assert_eq!(out, plain);
        d.verify().unwrap();

        let mut d = Decryptor::new(&f);
        let mut tampered = cipher.clone();
        tampered[5] ^= 1;
        d.update(&mut tampered);
        assert_eq!(d.verify().unwrap_err().0, FAILED_TO_DECRYPT);
    }

    #[test]
    fn metadata_is_validated_like_the_reference() {
        let (_, meta) = encrypt(b"x");
        let mut m = meta.clone();
        m["file"]["key"]["key_ops"] = json!(["decrypt"]);
        assert_eq!(parse_metadata(&m).unwrap_err().0, MALFORMED);
        let mut m = meta.clone();
        m["file"]["v"] = json!("v1");
        assert_eq!(parse_metadata(&m).unwrap_err().0, MALFORMED);
        let mut m = meta;
        m["file"]["url"] = json!("https://acme.test/abc");
        assert_eq!(parse_metadata(&m).unwrap_err().0, MALFORMED);
    }

    #[test]
    fn encrypted_body_roundtrip() {
        let key = RequestKey::from_base64(&STANDARD.encode([9u8; 32])).unwrap();
        let (_, meta) = encrypt(b"x");
        let enc = PkEncryption::from_key(
            vodozemac::Curve25519PublicKey::from_base64(&key.public_key()).unwrap(),
        )
        .encrypt(meta.to_string().as_bytes())
        .unwrap();
        let body = json!({"encrypted_body": {
            "ciphertext": STANDARD_NO_PAD.encode(&enc.ciphertext),
            "mac": STANDARD_NO_PAD.encode(&enc.mac),
            "ephemeral": enc.ephemeral_key.to_base64(),
        }});
        let f = metadata_from_body(body.to_string().as_bytes(), &key).unwrap();
        assert_eq!(f.media_path, "acme.test/abc");
        let mut bad = body.clone();
        bad["encrypted_body"]["mac"] = json!("AAAAAAAAAAA");
        assert_eq!(
            metadata_from_body(bad.to_string().as_bytes(), &key)
                .unwrap_err()
                .0,
            FAILED_TO_DECRYPT
        );
    }
}
