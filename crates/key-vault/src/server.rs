//! The HTTP API. Nothing here ever logs, returns or stores a plaintext key: the request body is
//! parsed by hand (serde's messages can quote values), and `key` goes straight into age.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::ApiKeys;
use crate::crypto;
use crate::store::{NewKey, RetrievalRecord, Store};

/// Largest request body accepted.
pub const BODY_LIMIT: usize = 64 * 1024;
/// Largest `key` accepted (bytes).
pub const MAX_KEY_LEN: usize = 4096;
/// Largest warrant reference accepted (bytes).
pub const MAX_WARRANT_LEN: usize = 256;
/// The retrieval's warrant header.
pub const WARRANT_HEADER: &str = "x-mxstack-warrant";
pub const KINDS: [&str; 2] = ["recovery_key", "backup_key"];

#[derive(Default)]
pub struct Counters {
    pub keys_stored: AtomicU64,
    pub retrievals: AtomicU64,
    pub auth_failures_store: AtomicU64,
    pub auth_failures_retrieve: AtomicU64,
    pub warrants_refused: AtomicU64,
    pub bad_requests: AtomicU64,
    pub errors: AtomicU64,
}

pub struct Vault {
    store: Store,
    recipients: Vec<age::x25519::Recipient>,
    /// SHA-256 of each API key accepted (the current one, and the one a rotation is
    /// retiring): compared in constant time at a fixed length.
    store_key: Vec<[u8; 32]>,
    retrieval_key: Vec<[u8; 32]>,
    /// The LI console's key: retrievals need a claim it signed (`crate::warrant`).
    warrant_signer: Option<ed25519_dalek::VerifyingKey>,
    pub counters: Counters,
}

impl Vault {
    pub fn new(store: Store, recipients: Vec<age::x25519::Recipient>, keys: &ApiKeys) -> Vault {
        Vault {
            store,
            recipients,
            store_key: accepted(&keys.store, keys.store_other.as_deref()),
            retrieval_key: accepted(&keys.retrieval, keys.retrieval_other.as_deref()),
            warrant_signer: None,
            counters: Counters::default(),
        }
    }

    /// Requires signed warrant claims from the console holding this key's private half.
    pub fn with_warrant_signer(mut self, signer: Option<ed25519_dalek::VerifyingKey>) -> Vault {
        self.warrant_signer = signer;
        self
    }
}

pub fn router(vault: Arc<Vault>) -> Router {
    Router::new()
        .route("/v1/keys", post(store_key))
        .route("/v1/keys/{user_id}", get(retrieve_keys))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "NOT_FOUND", "no such endpoint") })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(vault)
}

fn error(status: StatusCode, errcode: &str, message: &str) -> Response {
    let mut r = (status, Json(json!({"errcode": errcode, "error": message}))).into_response();
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, "Bearer".parse().unwrap());
    }
    r
}

/// The SHA-256s of the keys a route accepts: the current key and, during a rotation, the
/// previous one.
fn accepted(current: &str, previous: Option<&str>) -> Vec<[u8; 32]> {
    std::iter::once(current)
        .chain(previous)
        .map(|k| Sha256::digest(k.as_bytes()).into())
        .collect()
}

/// `Authorization: Bearer <key>` matches one of `expected` (constant time over the SHA-256s,
/// every one compared: which key matched does not show in the timing).
fn authorized(headers: &HeaderMap, expected: &[[u8; 32]]) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some(token) = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
    else {
        return false;
    };
    let got: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
    expected
        .iter()
        .fold(subtle::Choice::from(0), |ok, e| ok | got.ct_eq(e))
        .into()
}

/// Matrix user ID syntax: `@localpart:server_name`, at most 255 bytes; the localpart in the
/// historical grammar (printable ASCII without `:`), the server name a hostname, IPv4 or
/// `[IPv6]` literal with an optional port.
pub fn valid_user_id(s: &str) -> bool {
    if s.len() > 255 {
        return false;
    }
    let Some(rest) = s.strip_prefix('@') else {
        return false;
    };
    let Some((local, server)) = rest.split_once(':') else {
        return false;
    };
    if local.is_empty()
        || !local
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b':')
    {
        return false;
    }
    let (host, port) = if let Some(v6) = server.strip_prefix('[') {
        let Some((addr, after)) = v6.split_once(']') else {
            return false;
        };
        if addr.is_empty()
            || !addr
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return false;
        }
        match after {
            "" => (addr, None),
            p => match p.strip_prefix(':') {
                Some(p) => (addr, Some(p)),
                None => return false,
            },
        }
    } else {
        match server.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (server, None),
        }
    };
    if !server.starts_with('[')
        && (host.is_empty()
            || host.len() > 255
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-'))
    {
        return false;
    }
    match port {
        None => true,
        Some(p) => !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()),
    }
}

/// An optional string field: absent or null is None; anything but a short printable string is
/// an error naming the field (never its value).
fn opt_str(body: &Map<String, Value>, field: &str, max: usize) -> Result<Option<String>, String> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s))
            if !s.is_empty() && s.len() <= max && !s.chars().any(char::is_control) =>
        {
            Ok(Some(s.clone()))
        }
        Some(_) => Err(format!(
            "`{field}` must be a non-empty string of at most {max} bytes without control characters"
        )),
    }
}

struct StoreRequest {
    user_id: String,
    device_id: Option<String>,
    kind: String,
    backup_version: Option<String>,
    key: String,
}

fn parse_store(body: &[u8]) -> Result<StoreRequest, String> {
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(body) else {
        return Err("the body must be a JSON object".into());
    };
    const FIELDS: [&str; 5] = ["user_id", "device_id", "kind", "backup_version", "key"];
    if let Some(f) = body.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        let f: String = f.chars().take(64).collect();
        return Err(format!(
            "unknown field `{f}` (fields: user_id, device_id, kind, backup_version, key)"
        ));
    }
    let user_id = opt_str(&body, "user_id", 255)?.ok_or("`user_id` is required")?;
    if !valid_user_id(&user_id) {
        return Err("`user_id` is not a Matrix user ID (@localpart:server.name)".into());
    }
    let kind = opt_str(&body, "kind", 32)?.ok_or("`kind` is required")?;
    if !KINDS.contains(&kind.as_str()) {
        return Err("`kind` must be `recovery_key` or `backup_key`".into());
    }
    let key = match body.get("key") {
        Some(Value::String(k)) if !k.trim().is_empty() && k.len() <= MAX_KEY_LEN => k.clone(),
        _ => {
            return Err(format!(
                "`key` is required: a non-empty string of at most {MAX_KEY_LEN} bytes"
            ))
        }
    };
    Ok(StoreRequest {
        user_id,
        device_id: opt_str(&body, "device_id", 255)?,
        kind,
        backup_version: opt_str(&body, "backup_version", 255)?,
        key,
    })
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// RFC 3339 UTC with milliseconds, e.g. `2026-05-01T12:00:00.123Z`.
pub fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let tod = secs.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        tod / 3600,
        tod % 3600 / 60,
        tod % 60
    )
}

async fn store_key(
    State(vault): State<Arc<Vault>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if !authorized(&headers, &vault.store_key) {
        vault
            .counters
            .auth_failures_store
            .fetch_add(1, Ordering::Relaxed);
        eprintln!("key-vault: 401 store from {peer}: missing or wrong store API key");
        return error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "missing or wrong API key",
        );
    }
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            vault.counters.bad_requests.fetch_add(1, Ordering::Relaxed);
            let status = e.status();
            let (code, msg) = if status == StatusCode::PAYLOAD_TOO_LARGE {
                ("TOO_LARGE", format!("the body is over {BODY_LIMIT} bytes"))
            } else {
                ("BAD_REQUEST", "the body could not be read".to_string())
            };
            return error(status, code, &msg);
        }
    };
    let req = match parse_store(&body) {
        Ok(r) => r,
        Err(msg) => {
            vault.counters.bad_requests.fetch_add(1, Ordering::Relaxed);
            eprintln!("key-vault: 400 store from {peer}: {msg}");
            return error(StatusCode::BAD_REQUEST, "BAD_REQUEST", &msg);
        }
    };
    let ciphertext = match crypto::seal(&vault.recipients, req.key.as_bytes()) {
        Ok(c) => c,
        Err(e) => {
            vault.counters.errors.fetch_add(1, Ordering::Relaxed);
            eprintln!("key-vault: encryption failed: {e}");
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                "encryption failed",
            );
        }
    };
    drop(req.key);
    let fingerprint = crypto::fingerprint(&ciphertext);
    let new = NewKey {
        user_id: req.user_id.clone(),
        device_id: req.device_id.clone(),
        kind: req.kind.clone(),
        backup_version: req.backup_version.clone(),
        created_at_ms: now_ms(),
        fingerprint: fingerprint.clone(),
        ciphertext,
    };
    match vault.store.insert(new).await {
        Ok(version) => {
            vault.counters.keys_stored.fetch_add(1, Ordering::Relaxed);
            eprintln!(
                "key-vault: stored {} version {version} for {} (device {}, backup version {}, fingerprint {}) from {peer}",
                req.kind,
                req.user_id,
                req.device_id.as_deref().unwrap_or("-"),
                req.backup_version.as_deref().unwrap_or("-"),
                &fingerprint[..16],
            );
            (
                StatusCode::CREATED,
                Json(json!({"user_id": req.user_id, "version": version})),
            )
                .into_response()
        }
        Err(e) => {
            vault.counters.errors.fetch_add(1, Ordering::Relaxed);
            eprintln!("key-vault: storing for {} failed: {e}", req.user_id);
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                "the key could not be stored",
            )
        }
    }
}

async fn retrieve_keys(
    State(vault): State<Arc<Vault>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(user_id): Path<String>,
) -> Response {
    if !authorized(&headers, &vault.retrieval_key) {
        vault
            .counters
            .auth_failures_retrieve
            .fetch_add(1, Ordering::Relaxed);
        eprintln!("key-vault: 401 retrieval from {peer}: missing or wrong retrieval API key");
        return error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "missing or wrong API key",
        );
    }
    let header = headers
        .get(WARRANT_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    // With a signer, the header is a claim the console signed; what is recorded is its reference.
    let claimed;
    let warrant = match (&vault.warrant_signer, header) {
        (Some(signer), Some(token)) if !token.is_empty() => {
            match crate::warrant::verify(token, signer, &user_id, now_ms()) {
                Ok(claim) => {
                    claimed = claim.reference();
                    Some(claimed.as_str())
                }
                Err(why) => {
                    vault
                        .counters
                        .warrants_refused
                        .fetch_add(1, Ordering::Relaxed);
                    eprintln!("key-vault: 403 retrieval for {user_id} from {peer}: {why}");
                    return error(StatusCode::FORBIDDEN, "WARRANT_REFUSED", &why);
                }
            }
        }
        (Some(_), _) => None,
        (None, h) => h.filter(|w| {
            !w.is_empty() && w.len() <= MAX_WARRANT_LEN && !w.chars().any(char::is_control)
        }),
    };
    let Some(warrant) = warrant else {
        vault.counters.bad_requests.fetch_add(1, Ordering::Relaxed);
        eprintln!("key-vault: 400 retrieval from {peer}: no usable X-Mxstack-Warrant header");
        return error(
            StatusCode::BAD_REQUEST,
            "MISSING_WARRANT",
            &format!(
                "the X-Mxstack-Warrant header (the warrant reference, 1 to {MAX_WARRANT_LEN} printable characters) is required"
            ),
        );
    };
    if !valid_user_id(&user_id) {
        vault.counters.bad_requests.fetch_add(1, Ordering::Relaxed);
        return error(
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
            "the path must name a Matrix user ID (@localpart:server.name)",
        );
    }
    let at_ms = now_ms();
    let client = peer.to_string();
    let rec = RetrievalRecord {
        at_ms,
        user_id: &user_id,
        warrant,
        client: &client,
    };
    match vault.store.retrieve(rec).await {
        Ok(keys) => {
            vault.counters.retrievals.fetch_add(1, Ordering::Relaxed);
            let versions: Vec<i64> = keys.iter().map(|k| k.version).collect();
            eprintln!(
                "key-vault: retrieval for {user_id} under warrant {warrant:?} from {peer}: versions {versions:?}"
            );
            let keys: Vec<Value> = keys
                .into_iter()
                .map(|k| {
                    json!({
                        "version": k.version,
                        "kind": k.kind,
                        "device_id": k.device_id,
                        "backup_version": k.backup_version,
                        "created_at": rfc3339(k.created_at_ms),
                        "created_at_ms": k.created_at_ms,
                        "fingerprint": k.fingerprint,
                        "ciphertext": k.ciphertext,
                    })
                })
                .collect();
            Json(json!({
                "user_id": user_id,
                "warrant": warrant,
                "retrieved_at": rfc3339(at_ms),
                "keys": keys,
            }))
            .into_response()
        }
        Err(e) => {
            vault.counters.errors.fetch_add(1, Ordering::Relaxed);
            eprintln!("key-vault: retrieval for {user_id} failed (nothing returned): {e}");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                "the retrieval could not be recorded; nothing returned",
            )
        }
    }
}

async fn health(State(vault): State<Arc<Vault>>) -> Response {
    match vault.store.ping().await {
        Ok(()) => "ok".into_response(),
        Err(e) => {
            eprintln!("key-vault: health: database: {e}");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                "the database does not answer",
            )
        }
    }
}

async fn metrics(State(vault): State<Arc<Vault>>) -> Response {
    let c = &vault.counters;
    let v = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let text = format!(
        "# HELP mxstack_keyvault_keys_stored_total Key versions stored since start.\n\
         # TYPE mxstack_keyvault_keys_stored_total counter\n\
         mxstack_keyvault_keys_stored_total {}\n\
         # HELP mxstack_keyvault_retrievals_total Retrievals answered (and recorded) since start.\n\
         # TYPE mxstack_keyvault_retrievals_total counter\n\
         mxstack_keyvault_retrievals_total {}\n\
         # HELP mxstack_keyvault_auth_failures_total Requests refused for a missing or wrong API key.\n\
         # TYPE mxstack_keyvault_auth_failures_total counter\n\
         mxstack_keyvault_auth_failures_total{{endpoint=\"store\"}} {}\n\
         mxstack_keyvault_auth_failures_total{{endpoint=\"retrieve\"}} {}\n\
         # HELP mxstack_keyvault_warrants_refused_total Retrievals refused: the signed warrant claim did not verify, name the user, or was stale or expired.\n\
         # TYPE mxstack_keyvault_warrants_refused_total counter\n\
         mxstack_keyvault_warrants_refused_total {}\n\
         # HELP mxstack_keyvault_bad_requests_total Requests refused as malformed (400, 413).\n\
         # TYPE mxstack_keyvault_bad_requests_total counter\n\
         mxstack_keyvault_bad_requests_total {}\n\
         # HELP mxstack_keyvault_errors_total Requests that failed inside the vault (500).\n\
         # TYPE mxstack_keyvault_errors_total counter\n\
         mxstack_keyvault_errors_total {}\n\
         # HELP mxstack_keyvault_info The storage backend.\n\
         # TYPE mxstack_keyvault_info gauge\n\
         mxstack_keyvault_info{{backend=\"{}\",recipients=\"{}\"}} 1\n",
        v(&c.keys_stored),
        v(&c.retrievals),
        v(&c.auth_failures_store),
        v(&c.auth_failures_retrieve),
        v(&c.warrants_refused),
        v(&c.bad_requests),
        v(&c.errors),
        vault.store.backend(),
        vault.recipients.len(),
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        h
    }

    #[test]
    fn a_rotation_accepts_the_current_and_the_previous_key_only() {
        let both = accepted("Zx8vQ2mN7pL4kR9tW3yB6cF1", Some("Qm9vb1kR2f7w8xZp3LmN5tYc"));
        assert!(authorized(&bearer("Zx8vQ2mN7pL4kR9tW3yB6cF1"), &both));
        assert!(authorized(&bearer("Qm9vb1kR2f7w8xZp3LmN5tYc"), &both));
        assert!(!authorized(&bearer("Nw7pQ2mX9vL4kR8tB3yC6fH1"), &both));
        let retired = accepted("Zx8vQ2mN7pL4kR9tW3yB6cF1", None);
        assert!(!authorized(&bearer("Qm9vb1kR2f7w8xZp3LmN5tYc"), &retired));
        assert!(!authorized(&HeaderMap::new(), &retired));
    }

    #[test]
    fn user_ids() {
        for ok in [
            "@a:example.org",
            "@alice.smith_1=x/y+z:matrix.acme.eu",
            "@a:example.org:8448",
            "@a:[::1]",
            "@a:[2001:db8::1]:8448",
            "@a:1.2.3.4",
            "@Historical!Name:example.org",
        ] {
            assert!(valid_user_id(ok), "{ok}");
        }
        for bad in [
            "",
            "a:example.org",
            "@:example.org",
            "@a",
            "@a:",
            "@a:exa mple.org",
            "@a:example.org:",
            "@a:example.org:123456",
            "@a:[::1",
            "@a:[::1]x",
            "@a b:example.org",
            "@a:example.org/x",
        ] {
            assert!(!valid_user_id(bad), "{bad}");
        }
        assert!(!valid_user_id(&format!("@{}:example.org", "a".repeat(250))));
    }

    #[test]
    fn store_bodies() {
        let r = parse_store(br#"{"user_id":"@a:example.org","kind":"backup_key","key":"s3cret","device_id":"D","backup_version":"3"}"#).unwrap();
        assert_eq!(
            (r.kind.as_str(), r.backup_version.as_deref()),
            ("backup_key", Some("3"))
        );
        for (body, needle) in [
            (r#"[1]"#, "JSON object"),
            (
                r#"{"user_id":"a","kind":"recovery_key","key":"s3cret"}"#,
                "user_id",
            ),
            (
                r#"{"user_id":"@a:b","kind":"other","key":"s3cret"}"#,
                "kind",
            ),
            (r#"{"user_id":"@a:b","kind":"recovery_key"}"#, "`key`"),
            (
                r#"{"user_id":"@a:b","kind":"recovery_key","key":12345}"#,
                "`key`",
            ),
            (
                r#"{"user_id":"@a:b","kind":"recovery_key","key":"s3cret","extra":1}"#,
                "extra",
            ),
            (
                r#"{"user_id":"@a:b","kind":"recovery_key","key":"s3cret","backup_version":7}"#,
                "backup_version",
            ),
        ] {
            let e = parse_store(body.as_bytes())
                .err()
                .unwrap_or_else(|| panic!("{body}"));
            assert!(e.contains(needle), "{body}: {e}");
            assert!(!e.contains("s3cret") && !e.contains("12345"), "{e}");
        }
    }

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(1_767_225_599_999), "2025-12-31T23:59:59.999Z");
    }
}
