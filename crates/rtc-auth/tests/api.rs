//! The HTTP API on a real socket: what is refused before the homeserver is asked, and the
//! LiveKit room creation request. The end-to-end test (tests/e2e/test_rtc.py) exchanges real
//! OpenID tokens of a real Synapse; here nothing runs but the service (and, for room creation,
//! a listener that records what LiveKit would receive: LiveKit's server cannot be had here).

use std::sync::{Arc, Mutex};

use axum::http::HeaderMap;
use axum::routing::post;
use mxstack_rtc_auth::server::{router, Service};
use mxstack_rtc_auth::token::{self, Keys};
use mxstack_rtc_auth::RtcAuthConfig;
use serde_json::{json, Value};

const SECRET: &str = "test-secret-of-this-deployment";

fn keys() -> Keys {
    Keys::new("APItest", SECRET)
}

/// A port nothing listens on: asking the "homeserver" there fails, so a refusal that does not
/// count a homeserver error was decided without it.
async fn dead_port() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

async fn start(homeserver_url: String, livekit_api_url: Option<String>) -> (String, Arc<Service>) {
    let cfg = RtcAuthConfig {
        listen: "127.0.0.1:0".into(),
        server_name: "acme.test".into(),
        homeserver_url,
        livekit_url: "wss://livekit.acme.test".into(),
        livekit_api_url,
        keys_env: "UNUSED".into(),
        token_lifetime_secs: 3600,
    };
    let svc = Arc::new(Service::new(cfg, keys()).unwrap());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let app = router(svc.clone());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (url, svc)
}

fn openid(server: &str) -> Value {
    json!({"access_token": "abc", "token_type": "Bearer", "matrix_server_name": server, "expires_in": 3600})
}

async fn post_json(url: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_foreign_server_is_refused_without_asking_anyone() {
    let (url, svc) = start(format!("http://127.0.0.1:{}", dead_port().await), None).await;
    for (path, body) in [
        (
            "/sfu/get",
            json!({"room": "!r:evil.test", "openid_token": openid("evil.test"), "device_id": "D"}),
        ),
        (
            "/get_token",
            json!({"room_id": "!r:evil.test", "slot_id": "m.call#ROOM", "openid_token": openid("evil.test"),
                   "member": {"id": "m", "claimed_user_id": "@a:evil.test", "claimed_device_id": "D"}}),
        ),
    ] {
        let (status, v) = post_json(&format!("{url}{path}"), body).await;
        assert_eq!(status, 403, "{path}: {v}");
        assert_eq!(v["errcode"], "M_FORBIDDEN");
    }
    let m = svc.metrics.render();
    assert!(
        m.contains("mxstack_rtc_auth_refused_total{reason=\"foreign_server\"} 2"),
        "{m}"
    );
    assert!(
        m.contains("mxstack_rtc_auth_homeserver_errors_total 0"),
        "no network call: {m}"
    );
}

#[tokio::test]
async fn malformed_requests_and_delegation_are_refused_before_any_lookup() {
    let (url, svc) = start(format!("http://127.0.0.1:{}", dead_port().await), None).await;
    let cases = [
        (
            "/sfu/get",
            json!({"openid_token": openid("acme.test")}),
            "M_BAD_JSON",
        ),
        ("/sfu/get", json!({"room": "!r:acme.test"}), "M_BAD_JSON"),
        (
            "/sfu/get",
            json!({"room": "!r:acme.test", "openid_token": openid("acme.test"), "delay_id": "x", "delay_timeout": 1000}),
            "M_BAD_JSON",
        ),
        (
            "/sfu/get",
            json!({"room": "!r", "surprise": 1}),
            "M_NOT_JSON",
        ),
        (
            "/get_token",
            json!({"room_id": "!r:acme.test", "slot_id": "m.call#ROOM", "openid_token": openid("acme.test")}),
            "M_BAD_JSON",
        ),
        (
            "/get_token",
            json!({"slot_id": "m.call#ROOM", "openid_token": openid("acme.test"),
                   "member": {"id": "m", "claimed_user_id": "@a:acme.test", "claimed_device_id": "D"}}),
            "M_BAD_JSON",
        ),
    ];
    for (path, body, errcode) in cases {
        let (status, v) = post_json(&format!("{url}{path}"), body.clone()).await;
        assert_eq!(
            (status, v["errcode"].as_str()),
            (400, Some(errcode)),
            "{path} {body}"
        );
    }
    let m = svc.metrics.render();
    assert!(m.contains("reason=\"bad_request\"} 6"), "{m}");
    assert!(
        m.contains("mxstack_rtc_auth_homeserver_errors_total 0"),
        "{m}"
    );
}

#[tokio::test]
async fn an_unreachable_homeserver_is_a_gateway_error_not_a_token() {
    let (url, svc) = start(format!("http://127.0.0.1:{}", dead_port().await), None).await;
    let (status, v) = post_json(
        &format!("{url}/sfu/get"),
        json!({"room": "!r:acme.test", "openid_token": openid("acme.test"), "device_id": "D"}),
    )
    .await;
    assert_eq!(status, 502, "{v}");
    assert!(v.get("jwt").is_none());
    assert!(svc
        .metrics
        .render()
        .contains("mxstack_rtc_auth_homeserver_errors_total 1"));
}

#[tokio::test]
async fn health_cors_and_metrics() {
    let (url, _) = start("http://127.0.0.1:1".into(), None).await;
    let c = reqwest::Client::new();
    assert_eq!(
        c.get(format!("{url}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let pre = c
        .request(reqwest::Method::OPTIONS, format!("{url}/get_token"))
        .send()
        .await
        .unwrap();
    assert_eq!(pre.status(), 200);
    assert_eq!(pre.headers()["access-control-allow-origin"], "*");
    let m = c.get(format!("{url}/metrics")).send().await.unwrap();
    assert!(m
        .text()
        .await
        .unwrap()
        .contains("# TYPE mxstack_rtc_auth_tokens_issued_total counter"));
}

/// What a stand-in for LiveKit's RoomService received.
#[derive(Default)]
struct Seen {
    path: String,
    auth: String,
    body: Value,
}

async fn livekit_stand_in(status: u16) -> (String, Arc<Mutex<Seen>>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let s2 = seen.clone();
    let app = axum::Router::new().route(
        "/twirp/livekit.RoomService/CreateRoom",
        post(move |h: HeaderMap, body: axum::body::Bytes| {
            let s2 = s2.clone();
            async move {
                let mut s = s2.lock().unwrap();
                s.path = "/twirp/livekit.RoomService/CreateRoom".into();
                s.auth = h["authorization"].to_str().unwrap().to_string();
                s.body = serde_json::from_slice(&body).unwrap();
                (
                    axum::http::StatusCode::from_u16(status).unwrap(),
                    axum::Json(json!({"name": s.body["name"], "sid": "RM_x"})),
                )
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (url, seen)
}

#[tokio::test]
async fn room_creation_asks_livekit_with_a_create_only_token() {
    let (lk, seen) = livekit_stand_in(200).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let c = reqwest::Client::new();
    mxstack_rtc_auth::livekit::create_room(&c, &lk, &keys(), "ROOMALIAS", now)
        .await
        .unwrap();
    let s = seen.lock().unwrap();
    assert_eq!(
        s.body,
        json!({"name": "ROOMALIAS", "empty_timeout": 300, "departure_timeout": 20})
    );
    let bearer = s.auth.strip_prefix("Bearer ").unwrap();
    let claims = token::verify(&keys(), bearer).unwrap();
    assert!(claims.video.room_create && !claims.video.room_join);
    assert!(claims.sub.is_empty());
}

#[tokio::test]
async fn a_refused_room_creation_is_an_error() {
    let (lk, _) = livekit_stand_in(401).await;
    let c = reqwest::Client::new();
    let e = mxstack_rtc_auth::livekit::create_room(&c, &lk, &keys(), "R", 0)
        .await
        .unwrap_err();
    assert_eq!(e, mxstack_rtc_auth::livekit::CreateError::Refused(401));
}
