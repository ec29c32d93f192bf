//! The HTTP API: lk-jwt-service's `POST /sfu/get` (legacy, what Element Call's compatibility
//! mode asks) and `POST /get_token` (MSC4195), `GET /healthz`, and `GET /metrics` (not routed
//! by the edge).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::metrics::Metrics;
use crate::openid::{self, OpenIdToken, Refusal};
use crate::token::{self, Keys};
use crate::RtcAuthConfig;

pub struct Service {
    pub cfg: RtcAuthConfig,
    keys: Keys,
    client: reqwest::Client,
    pub metrics: Metrics,
}

pub type Shared = Arc<Service>;

impl Service {
    pub fn new(cfg: RtcAuthConfig, keys: Keys) -> Result<Service, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            // Our homeserver and LiveKit only: never follow a redirect elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Service {
            cfg,
            keys,
            client,
            metrics: Metrics::default(),
        })
    }
}

pub fn router(s: Shared) -> Router {
    Router::new()
        .route("/healthz", get(healthz).head(healthz))
        .route("/metrics", get(metrics))
        .route("/sfu/get", post(sfu_get).options(preflight))
        .route("/get_token", post(get_token).options(preflight))
        .layer(axum::middleware::map_response(cors))
        .with_state(s)
}

async fn healthz() -> StatusCode {
    StatusCode::OK
}

async fn metrics(State(s): State<Shared>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
        .into_response()
}

/// Element Call runs in the browser on another origin: every answer allows any origin (the
/// token in the body is the credential, no cookie is involved), as lk-jwt-service does.
async fn cors(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(
            "Accept, Content-Type, Content-Length, Accept-Encoding, X-CSRF-Token",
        ),
    );
    r
}

async fn preflight() -> StatusCode {
    StatusCode::OK
}

/// A Matrix-style error.
#[derive(Debug)]
pub struct Failure {
    status: StatusCode,
    errcode: &'static str,
    error: String,
}

impl Failure {
    fn new(status: StatusCode, errcode: &'static str, error: impl Into<String>) -> Failure {
        Failure {
            status,
            errcode,
            error: error.into(),
        }
    }

    fn bad_json(error: impl Into<String>) -> Failure {
        Failure::new(StatusCode::BAD_REQUEST, "M_BAD_JSON", error)
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({ "errcode": self.errcode, "error": self.error })),
        )
            .into_response()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Member {
    #[serde(default)]
    id: String,
    #[serde(default)]
    claimed_user_id: String,
    #[serde(default)]
    claimed_device_id: String,
}

/// `POST /sfu/get`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LegacyRequest {
    #[serde(default)]
    room: String,
    #[serde(default)]
    openid_token: OpenIdToken,
    #[serde(default)]
    device_id: String,
    #[serde(default)]
    delay_id: String,
    #[serde(default)]
    delay_timeout: i64,
    #[serde(default)]
    delay_cs_api_url: String,
}

/// `POST /get_token`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    #[serde(default)]
    room_id: String,
    #[serde(default)]
    slot_id: String,
    #[serde(default)]
    openid_token: OpenIdToken,
    #[serde(default)]
    member: Option<Member>,
    #[serde(default)]
    delay_id: String,
    #[serde(default)]
    delay_timeout: i64,
    #[serde(default)]
    delay_cs_api_url: String,
}

fn parse<T: for<'de> Deserialize<'de>>(s: &Service, body: &[u8]) -> Result<T, Failure> {
    serde_json::from_slice(body).map_err(|_| {
        s.metrics.bad_request.fetch_add(1, Relaxed);
        Failure::new(
            StatusCode::BAD_REQUEST,
            "M_NOT_JSON",
            "Error reading request",
        )
    })
}

fn require_token(t: &OpenIdToken) -> Result<(), Failure> {
    if t.access_token.is_empty() || t.matrix_server_name.is_empty() {
        return Err(Failure::bad_json(
            "The request body `openid_token` is missing `access_token` or `matrix_server_name`",
        ));
    }
    Ok(())
}

/// Delegating the delayed leave event (MSC4140) to this service is not implemented: a client
/// asking for it is told so, and keeps restarting its delayed event itself.
fn refuse_delegation(delay_id: &str, delay_timeout: i64, cs_api: &str) -> Result<(), Failure> {
    if !delay_id.is_empty() || delay_timeout != 0 || !cs_api.is_empty() {
        return Err(Failure::bad_json(
            "Delegation of delayed events is not supported by this service",
        ));
    }
    Ok(())
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The user the token belongs to, or the refusal (counted).
async fn authenticate(s: &Service, t: &OpenIdToken) -> Result<String, Failure> {
    openid::user_of(&s.client, &s.cfg.homeserver_url, &s.cfg.server_name, t)
        .await
        .map_err(|r| {
            eprintln!("rtc-auth: refused: {r}");
            match r {
                Refusal::ForeignServer(_) => {
                    s.metrics.foreign_server.fetch_add(1, Relaxed);
                    Failure::new(
                        StatusCode::FORBIDDEN,
                        "M_FORBIDDEN",
                        format!("This service serves only users of {}", s.cfg.server_name),
                    )
                }
                Refusal::Unreachable(_) => {
                    s.metrics.homeserver_errors.fetch_add(1, Relaxed);
                    Failure::new(
                        StatusCode::BAD_GATEWAY,
                        "M_UNKNOWN",
                        "The homeserver could not be asked",
                    )
                }
                Refusal::Rejected(_) | Refusal::ForeignUser(_) | Refusal::Malformed => {
                    s.metrics.unauthorized.fetch_add(1, Relaxed);
                    unauthorized()
                }
            }
        })
}

fn unauthorized() -> Failure {
    Failure::new(
        StatusCode::UNAUTHORIZED,
        "M_UNAUTHORIZED",
        "The request could not be authorised.",
    )
}

/// Creates the room on LiveKit (when there is one to create it on), then mints the token.
async fn grant(s: &Service, user: &str, identity: &str, room: &str) -> Result<Response, Failure> {
    let now = now();
    if let Some(api) = &s.cfg.livekit_api_url {
        if let Err(e) = crate::livekit::create_room(&s.client, api, &s.keys, room, now).await {
            s.metrics.room_errors.fetch_add(1, Relaxed);
            eprintln!("rtc-auth: {e} (room {room}, user {user})");
            return Err(Failure::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "M_UNKNOWN",
                "Unable to create room on SFU",
            ));
        }
        s.metrics.rooms_created.fetch_add(1, Relaxed);
    }
    let jwt = token::join_token(&s.keys, identity, room, now, s.cfg.token_lifetime_secs);
    eprintln!("rtc-auth: token for {user} in LiveKit room {room}");
    Ok(Json(json!({ "url": s.cfg.livekit_url, "jwt": jwt })).into_response())
}

async fn sfu_get(State(s): State<Shared>, body: Bytes) -> Result<Response, Failure> {
    let req: LegacyRequest = parse(&s, &body)?;
    let checked = (|| {
        if req.room.is_empty() {
            return Err(Failure::bad_json("Missing room parameter"));
        }
        require_token(&req.openid_token)?;
        refuse_delegation(&req.delay_id, req.delay_timeout, &req.delay_cs_api_url)
    })();
    if let Err(f) = checked {
        s.metrics.bad_request.fetch_add(1, Relaxed);
        return Err(f);
    }
    let user = authenticate(&s, &req.openid_token).await?;
    let identity = token::legacy_identity(&user, &req.device_id);
    let room = token::room_alias(&req.room, token::LEGACY_SLOT);
    let r = grant(&s, &user, &identity, &room).await?;
    s.metrics.issued_legacy.fetch_add(1, Relaxed);
    Ok(r)
}

async fn get_token(State(s): State<Shared>, body: Bytes) -> Result<Response, Failure> {
    let req: Request = parse(&s, &body)?;
    let checked = (|| {
        if req.room_id.is_empty() || req.slot_id.is_empty() {
            return Err(Failure::bad_json(
                "The request body is missing `room_id` or `slot_id`",
            ));
        }
        let m = req.member.as_ref().filter(|m| {
            !m.id.is_empty() && !m.claimed_user_id.is_empty() && !m.claimed_device_id.is_empty()
        });
        let Some(m) = m else {
            return Err(Failure::bad_json(
                "The request body `member` is missing `id`, `claimed_user_id` or `claimed_device_id`",
            ));
        };
        require_token(&req.openid_token)?;
        refuse_delegation(&req.delay_id, req.delay_timeout, &req.delay_cs_api_url)?;
        Ok(m)
    })();
    let member = match checked {
        Ok(m) => m,
        Err(f) => {
            s.metrics.bad_request.fetch_add(1, Relaxed);
            return Err(f);
        }
    };
    let user = authenticate(&s, &req.openid_token).await?;
    if member.claimed_user_id != user {
        s.metrics.unauthorized.fetch_add(1, Relaxed);
        eprintln!(
            "rtc-auth: refused: claimed user {} is not the token's {user}",
            member.claimed_user_id
        );
        return Err(unauthorized());
    }
    let identity = token::identity(&user, &member.claimed_device_id, &member.id);
    let room = token::room_alias(&req.room_id, &req.slot_id);
    let r = grant(&s, &user, &identity, &room).await?;
    s.metrics.issued.fetch_add(1, Relaxed);
    Ok(r)
}
