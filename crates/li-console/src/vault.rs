//! The key vault's retrieval side: `GET /v1/keys/{user_id}` with the retrieval API key and the
//! warrant the retrieval is made under (the vault records both), then the age envelope opened with
//! the vault identity only the console holds. Plaintext keys live only in memory for one request.

use std::io::Read;
use std::time::Duration;

use age::armor::ArmoredReader;
use ed25519_dalek::SigningKey;
use mxstack_key_vault::warrant::{self, WarrantClaim};
use serde::Deserialize;

use crate::store::Warrant;
use crate::time::now_ms;

/// One stored version of a user's escrowed key, opened.
pub struct EscrowedKey {
    pub version: i64,
    /// `recovery_key` or `backup_key`.
    pub kind: String,
    pub created_at: String,
    /// SHA-256 of the stored ciphertext (what the vault's audit shows).
    pub fingerprint: String,
    pub key: String,
}

impl std::fmt::Debug for EscrowedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EscrowedKey")
            .field("version", &self.version)
            .field("kind", &self.kind)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Listing {
    keys: Vec<Stored>,
}

#[derive(Deserialize)]
struct Stored {
    version: i64,
    kind: String,
    created_at: String,
    fingerprint: String,
    ciphertext: String,
}

pub struct VaultClient {
    http: reqwest::Client,
    base: String,
    retrieval_key: String,
    identity: age::x25519::Identity,
    /// Signs the warrant claim the vault checks (`mxstack_key_vault::warrant`).
    signer: SigningKey,
}

impl VaultClient {
    pub fn new(
        base: &str,
        retrieval_key: String,
        identity: &str,
        signer: SigningKey,
    ) -> Result<VaultClient, String> {
        let identity: age::x25519::Identity = identity
            .trim()
            .parse()
            .map_err(|_| "the vault identity is not an age X25519 identity".to_string())?;
        Ok(VaultClient {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .build()
                .map_err(|e| format!("HTTP client: {e}"))?,
            base: base.trim_end_matches('/').to_string(),
            retrieval_key,
            identity,
            signer,
        })
    }

    /// Every version the vault holds for `user_id`, newest first, opened, under `warrant` (the
    /// caller checked it is active and names the user; the vault checks the signed claim again
    /// and records it with the retrieval).
    pub async fn retrieve(&self, user_id: &str, w: &Warrant) -> Result<Vec<EscrowedKey>, String> {
        let claim = WarrantClaim {
            warrant_id: w.id,
            case_ref: w.terms.case_ref.clone(),
            users: w.terms.target_users.clone(),
            expires_ms: w.terms.expires_ms,
            issued_ms: now_ms(),
        };
        let warrant = warrant::sign(&claim, &self.signer);
        let url = format!("{}/v1/keys/{}", self.base, encode_path(user_id));
        let resp = self
            .http
            .get(&url)
            .bearer_auth(&self.retrieval_key)
            .header("x-mxstack-warrant", &warrant)
            .send()
            .await
            .map_err(|e| format!("key vault unreachable: {}", e.without_url()))?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(Vec::new());
        }
        if !status.is_success() {
            // The vault's refusal says why (never anything secret): show it.
            let why = resp
                .json::<serde_json::Value>()
                .await
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or_default();
            return Err(format!("key vault answered {status}: {why}"));
        }
        let listing: Listing = resp
            .json()
            .await
            .map_err(|e| format!("key vault reply: {}", e.without_url()))?;
        listing
            .keys
            .into_iter()
            .map(|k| {
                Ok(EscrowedKey {
                    key: self.open(&k.ciphertext).map_err(|e| {
                        format!("escrowed key version {} cannot be opened: {e}", k.version)
                    })?,
                    version: k.version,
                    kind: k.kind,
                    created_at: k.created_at,
                    fingerprint: k.fingerprint,
                })
            })
            .collect()
    }

    fn open(&self, armored: &str) -> Result<String, String> {
        let decryptor = age::Decryptor::new(ArmoredReader::new(armored.as_bytes()))
            .map_err(|e| format!("age: {e}"))?;
        let mut reader = decryptor
            .decrypt(std::iter::once(&self.identity as &dyn age::Identity))
            .map_err(|e| format!("age: {e}"))?;
        let mut out = String::new();
        reader
            .read_to_string(&mut out)
            .map_err(|e| format!("age: {e}"))?;
        Ok(out)
    }
}

/// Percent-encodes a user id for a path segment (`@` and `:` are fine, but be strict).
fn encode_path(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~@:=".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
