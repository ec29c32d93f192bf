//! LiveKit access tokens: HS256 JWTs signed with the API secret, issued by the API key, in the
//! claims format of LiveKit's `auth.AccessToken` (what lk-jwt-service mints), and the names
//! lk-jwt-service derives for LiveKit rooms and participants.

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The MatrixRTC slot of the legacy endpoint (`/sfu/get` has no slot: the room's call).
pub const LEGACY_SLOT: &str = "m.call#ROOM";

/// A LiveKit API key and its secret.
#[derive(Clone)]
pub struct Keys {
    pub key: String,
    secret: String,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret never reaches a log line.
        f.debug_struct("Keys").field("key", &self.key).finish()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeysError {
    #[error("expected `<api key>: <api secret>` lines")]
    Shape,
    #[error("the API key or secret is empty")]
    Empty,
}

impl Keys {
    pub fn new(key: &str, secret: &str) -> Keys {
        Keys {
            key: key.into(),
            secret: secret.into(),
        }
    }

    /// LiveKit's LIVEKIT_KEYS format: `<api key>: <api secret>` lines. LiveKit accepts every
    /// pair; we sign with the first. While `mxstack rotate` replaces the keys the value holds
    /// the new pair first and the retiring one after it (docs/ROTATION.md).
    pub fn parse(text: &str) -> Result<Keys, KeysError> {
        let mut pairs = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(|line| {
                let (key, secret) = line.split_once(':').ok_or(KeysError::Shape)?;
                let (key, secret) = (key.trim(), secret.trim());
                if key.is_empty() || secret.is_empty() {
                    return Err(KeysError::Empty);
                }
                Ok(Keys::new(key, secret))
            })
            .collect::<Result<Vec<Keys>, KeysError>>()?;
        if pairs.is_empty() {
            return Err(KeysError::Shape);
        }
        Ok(pairs.swap_remove(0))
    }
}

/// LiveKit's video grant (camelCase keys; absent booleans keep LiveKit's defaults).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VideoGrant {
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub room_create: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub room_join: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub room: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_publish: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_subscribe: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_update_own_metadata: Option<bool>,
}

/// The claims of a LiveKit access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The API key.
    pub iss: String,
    /// The participant identity (empty for a server-side API token).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sub: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub jti: String,
    pub nbf: u64,
    pub exp: u64,
    pub video: VideoGrant,
}

/// A participant's token for one room: join, publish, subscribe, update its own metadata, and
/// never create rooms (the service creates them; see `livekit`), as lk-jwt-service grants.
pub fn join_token(keys: &Keys, identity: &str, room: &str, now: u64, lifetime: u64) -> String {
    sign(
        keys,
        &Claims {
            iss: keys.key.clone(),
            sub: identity.into(),
            jti: identity.into(),
            nbf: now,
            exp: now + lifetime,
            video: VideoGrant {
                room_create: false,
                room_join: true,
                room: room.into(),
                can_publish: Some(true),
                can_subscribe: Some(true),
                can_update_own_metadata: Some(true),
            },
        },
    )
}

/// A short-lived server token for LiveKit's RoomService API: room creation only.
pub fn room_service_token(keys: &Keys, now: u64) -> String {
    sign(
        keys,
        &Claims {
            iss: keys.key.clone(),
            sub: String::new(),
            jti: String::new(),
            nbf: now,
            exp: now + 60,
            video: VideoGrant {
                room_create: true,
                ..VideoGrant::default()
            },
        },
    )
}

fn sign(keys: &Keys, claims: &Claims) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(keys.secret.as_bytes()),
    )
    .expect("HS256 over serializable claims cannot fail")
}

/// Checks a token's signature, issuer and expiry the way LiveKit does (HS256 with the secret
/// of the key in `iss`; no leeway).
pub fn verify(keys: &Keys, token: &str) -> Result<Claims, jsonwebtoken::errors::Error> {
    let mut v = Validation::new(Algorithm::HS256);
    v.set_issuer(&[&keys.key]);
    v.set_required_spec_claims(&["exp", "iss", "nbf"]);
    v.validate_nbf = true;
    v.leeway = 0;
    jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(keys.secret.as_bytes()), &v)
        .map(|d| d.claims)
}

/// SHA-256 of the JSON array of `parts`, unpadded standard base64: lk-jwt-service's derivation
/// of LiveKit names, so a call maps to the same LiveKit room whichever service a client asks.
fn hashed(parts: &[&str]) -> String {
    let json = serde_json::to_vec(parts).expect("strings serialize");
    STANDARD_NO_PAD.encode(Sha256::digest(json))
}

/// The LiveKit room of a Matrix room's MatrixRTC slot.
pub fn room_alias(matrix_room: &str, slot: &str) -> String {
    hashed(&[matrix_room, slot])
}

/// The LiveKit identity of a MatrixRTC member (`/get_token`).
pub fn identity(user_id: &str, device_id: &str, member_id: &str) -> String {
    hashed(&[user_id, device_id, member_id])
}

/// The LiveKit identity of the legacy endpoint (`/sfu/get`): `<user id>:<device id>`.
pub fn legacy_identity(user_id: &str, device_id: &str) -> String {
    format!("{user_id}:{device_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys::new("APIkey123", "a-long-secret-of-the-deployment")
    }

    #[test]
    fn keys_parse_livekits_format_and_refuse_anything_else() {
        let k = Keys::parse("APIabc: s3cr3t\n").unwrap();
        assert_eq!((k.key.as_str(), k.secret.as_str()), ("APIabc", "s3cr3t"));
        assert_eq!(Keys::parse("APIabc s3cr3t").unwrap_err(), KeysError::Shape);
        // During a rotation: the new pair first (it signs), the retiring one after it.
        let k2 = Keys::parse("APInew: n3w\nAPIabc: s3cr3t\n").unwrap();
        assert_eq!((k2.key.as_str(), k2.secret.as_str()), ("APInew", "n3w"));
        assert_eq!(
            Keys::parse("a: b\nc d").unwrap_err(),
            KeysError::Shape,
            "every line must be a pair"
        );
        assert_eq!(Keys::parse("APIabc: ").unwrap_err(), KeysError::Empty);
        assert_eq!(Keys::parse("").unwrap_err(), KeysError::Shape);
        assert!(
            !format!("{k:?}").contains("s3cr3t"),
            "Debug hides the secret"
        );
    }

    #[test]
    fn a_join_token_carries_identity_room_and_the_upstream_grants() {
        let now = 1_800_000_000;
        let t = join_token(&keys(), "@alice:acme.test:DEV", "ROOM", now, 3600);
        let mut v = Validation::new(Algorithm::HS256);
        v.validate_exp = false;
        v.validate_nbf = false;
        let c = jsonwebtoken::decode::<serde_json::Value>(
            &t,
            &DecodingKey::from_secret(b"a-long-secret-of-the-deployment"),
            &v,
        )
        .unwrap()
        .claims;
        assert_eq!(c["iss"], "APIkey123");
        assert_eq!(c["sub"], "@alice:acme.test:DEV");
        assert_eq!(c["exp"], now + 3600);
        assert_eq!(c["nbf"], now);
        assert_eq!(
            c["video"],
            serde_json::json!({"roomJoin": true, "room": "ROOM", "canPublish": true,
                               "canSubscribe": true, "canUpdateOwnMetadata": true}),
            "no roomCreate: participants never create rooms"
        );
    }

    #[test]
    fn verify_refuses_another_secret_another_key_and_expired_tokens() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let good = join_token(&keys(), "id", "room", now, 60);
        assert_eq!(verify(&keys(), &good).unwrap().sub, "id");
        let other_secret = Keys::new("APIkey123", "another-secret");
        assert!(verify(&other_secret, &good).is_err(), "wrong signature");
        let other_key = Keys::new("APIother", "a-long-secret-of-the-deployment");
        assert!(verify(&other_key, &good).is_err(), "wrong issuer");
        let expired = join_token(&keys(), "id", "room", now - 7200, 3600);
        let e = verify(&keys(), &expired).unwrap_err();
        assert_eq!(e.kind(), &jsonwebtoken::errors::ErrorKind::ExpiredSignature);
        let future = join_token(&keys(), "id", "room", now + 600, 3600);
        assert!(verify(&keys(), &future).is_err(), "not yet valid");
    }

    #[test]
    fn room_service_tokens_only_create_rooms_and_expire_within_a_minute() {
        let t = room_service_token(&keys(), 1_000);
        let mut v = Validation::new(Algorithm::HS256);
        v.validate_exp = false;
        let c = jsonwebtoken::decode::<Claims>(
            &t,
            &DecodingKey::from_secret(b"a-long-secret-of-the-deployment"),
            &v,
        )
        .unwrap()
        .claims;
        assert_eq!(c.exp - c.nbf, 60);
        assert_eq!(
            c.video,
            VideoGrant {
                room_create: true,
                ..Default::default()
            }
        );
        assert!(c.sub.is_empty());
    }

    #[test]
    fn names_are_lk_jwt_services() {
        // sha256('["!r:acme.test","m.call#ROOM"]'), unpadded base64: the same derivation as
        // lk-jwt-service's LiveKitRoomAliasFor (python3: base64.b64encode(hashlib.sha256(
        // json.dumps([...], separators=(",", ":")).encode()).digest()).rstrip(b"=")).
        assert_eq!(
            room_alias("!r:acme.test", LEGACY_SLOT),
            "QPn4ixlSw4W9IFyjnwsFqlYvRIxsjG/f1HFFvl58yzY"
        );
        assert_eq!(room_alias("!r:acme.test", LEGACY_SLOT).len(), 43);
        assert_ne!(
            room_alias("!r:acme.test", "m.call#a"),
            room_alias("!r:acme.test", LEGACY_SLOT)
        );
        assert_ne!(identity("@a:x", "D", "m1"), identity("@a:x", "D", "m2"));
        assert_eq!(legacy_identity("@a:x", "DEV"), "@a:x:DEV");
    }
}
