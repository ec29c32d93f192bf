//! Signed warrant claims: how the vault knows a retrieval is for a user an active warrant names.
//!
//! The LI console (the only holder of the retrieval key) checks its warrants itself; a signed claim
//! makes the vault check too, so a leaked retrieval key alone retrieves nothing. The console signs
//! `{warrant_id, case_ref, users, expires_ms, issued_ms}` with its Ed25519 key (secret
//! `li_console_signing_key`, the key that also signs evidence manifests); the vault, configured
//! with the public half (`warrant_signer`), refuses a retrieval unless the signature verifies, the
//! user is in `users`, the warrant has not expired and the claim was issued within
//! [`MAX_CLAIM_AGE_MS`] (a captured header cannot be replayed later).
//!
//! Header format (`X-Mxstack-Warrant`): `v1.<base64url(claim JSON)>.<base64url(signature)>`, the
//! signature over the exact claim bytes, unpadded base64url.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

/// How far a claim's `issued_ms` may be from the vault's clock.
pub const MAX_CLAIM_AGE_MS: i64 = 5 * 60 * 1000;
/// Longest header accepted (a warrant may name many users).
pub const MAX_TOKEN_LEN: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarrantClaim {
    pub warrant_id: i64,
    pub case_ref: String,
    pub users: Vec<String>,
    pub expires_ms: i64,
    pub issued_ms: i64,
}

impl WarrantClaim {
    /// What the vault records with the retrieval.
    pub fn reference(&self) -> String {
        let case: String = self.case_ref.chars().take(200).collect();
        format!("{case} (console warrant #{})", self.warrant_id)
    }
}

/// The console's key from its 32-byte seed (standard base64, as secrets.yaml holds it).
pub fn signing_key(seed_b64: &str) -> Result<SigningKey, String> {
    let seed: [u8; 32] = STANDARD
        .decode(seed_b64.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| "the signing key is not 32 bytes of base64".to_string())?;
    Ok(SigningKey::from_bytes(&seed))
}

/// The public key the vault is configured with (`warrant_signer`), standard base64.
pub fn public_key_b64(key: &SigningKey) -> String {
    STANDARD.encode(key.verifying_key().to_bytes())
}

pub fn parse_public_key(b64: &str) -> Result<VerifyingKey, String> {
    let bytes: [u8; 32] = STANDARD
        .decode(b64.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| "`warrant_signer` is not a base64 Ed25519 public key".to_string())?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| format!("`warrant_signer`: {e}"))
}

/// The header value for `claim`.
pub fn sign(claim: &WarrantClaim, key: &SigningKey) -> String {
    let body = serde_json::to_vec(claim).expect("claim serializes");
    let sig = key.sign(&body);
    format!(
        "v1.{}.{}",
        URL_SAFE_NO_PAD.encode(&body),
        URL_SAFE_NO_PAD.encode(sig.to_bytes())
    )
}

/// Checks a header value for a retrieval of `user_id` at `now_ms`. The error says what is wrong,
/// never echoing the token.
pub fn verify(
    token: &str,
    signer: &VerifyingKey,
    user_id: &str,
    now_ms: i64,
) -> Result<WarrantClaim, String> {
    if token.len() > MAX_TOKEN_LEN {
        return Err("the warrant claim is too long".into());
    }
    let mut parts = token.trim().split('.');
    let (Some("v1"), Some(body), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(
            "the warrant is not a signed claim (v1.<claim>.<signature>) from the LI console".into(),
        );
    };
    let body = URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|_| "the warrant claim is not base64url".to_string())?;
    let sig: [u8; 64] = URL_SAFE_NO_PAD
        .decode(sig)
        .ok()
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| "the warrant signature is not 64 bytes of base64url".to_string())?;
    signer
        .verify(&body, &Signature::from_bytes(&sig))
        .map_err(|_| {
            "the warrant claim's signature does not verify with `warrant_signer`".to_string()
        })?;
    let claim: WarrantClaim =
        serde_json::from_slice(&body).map_err(|e| format!("the warrant claim: {e}"))?;
    if !claim.users.iter().any(|u| u == user_id) {
        return Err(format!(
            "warrant #{} does not name {user_id}",
            claim.warrant_id
        ));
    }
    if claim.expires_ms <= now_ms {
        return Err(format!("warrant #{} has expired", claim.warrant_id));
    }
    if (now_ms - claim.issued_ms).abs() > MAX_CLAIM_AGE_MS {
        return Err(format!(
            "the claim for warrant #{} was issued {} s from now: claims are good for {} s",
            claim.warrant_id,
            (now_ms - claim.issued_ms) / 1000,
            MAX_CLAIM_AGE_MS / 1000
        ));
    }
    Ok(claim)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    fn claim() -> WarrantClaim {
        WarrantClaim {
            warrant_id: 7,
            case_ref: "CASE-7".into(),
            users: vec!["@alice:acme.test".into(), "@bob:acme.test".into()],
            expires_ms: NOW + 3_600_000,
            issued_ms: NOW,
        }
    }

    #[test]
    fn a_signed_claim_verifies_for_its_users_only_while_fresh_and_unexpired() {
        let key = SigningKey::from_bytes(&[3; 32]);
        let signer = parse_public_key(&public_key_b64(&key)).unwrap();
        let token = sign(&claim(), &key);
        assert_eq!(
            verify(&token, &signer, "@bob:acme.test", NOW + 1000).unwrap(),
            claim()
        );
        assert!(verify(&token, &signer, "@carol:acme.test", NOW)
            .unwrap_err()
            .contains("does not name"));
        assert!(verify(
            &token,
            &signer,
            "@alice:acme.test",
            NOW + MAX_CLAIM_AGE_MS + 1
        )
        .unwrap_err()
        .contains("issued"));
        let mut old = claim();
        old.expires_ms = NOW - 1;
        assert!(verify(&sign(&old, &key), &signer, "@alice:acme.test", NOW)
            .unwrap_err()
            .contains("expired"));
        // Another key, a changed claim, free text: refused.
        let other = SigningKey::from_bytes(&[4; 32]);
        assert!(
            verify(&sign(&claim(), &other), &signer, "@alice:acme.test", NOW)
                .unwrap_err()
                .contains("does not verify")
        );
        let (head, rest) = token.split_once('.').unwrap();
        let (_, sig) = rest.split_once('.').unwrap();
        let mut more = claim();
        more.users.push("@carol:acme.test".into());
        let forged = format!(
            "{head}.{}.{sig}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&more).unwrap())
        );
        assert!(verify(&forged, &signer, "@carol:acme.test", NOW).is_err());
        assert!(verify("W-1", &signer, "@alice:acme.test", NOW)
            .unwrap_err()
            .contains("not a signed claim"));
        assert_eq!(claim().reference(), "CASE-7 (console warrant #7)");
    }
}
