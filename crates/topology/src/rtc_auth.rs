//! MatrixRTC for Element Call (feature `calls`): the authorization service's config, the focus
//! that `.well-known/matrix/client` and Synapse's MSC4143 transports endpoint announce, and the
//! Synapse settings Element Call needs. One function each, shared by both targets.

use mxstack_service_config::rtc_auth::RtcAuthConfig;
use mxstack_spec::Config;
use serde_json::{json, Value};

use crate::addressing::Addressing;
use crate::Topology;

/// The service's config file name (ConfigMap key, local state file).
pub const CONFIG_FILE: &str = "rtc-auth.yaml";
/// The environment variable holding `<api key>: <api secret>` (LiveKit's own variable name).
pub const ENV_KEYS: &str = "LIVEKIT_KEYS";
/// Lifetime of a LiveKit token (lk-jwt-service's: one hour).
pub const TOKEN_LIFETIME_SECS: u64 = 3600;
/// MSC4140: the longest a client may delay an event (Element Call's documented value).
pub const MAX_EVENT_DELAY: &str = "24h";

/// `<api key>: <api secret>`: LiveKit's LIVEKIT_KEYS format, which the authorization service
/// reads too (one value for both). While `mxstack rotate` replaces the pair, the pair being
/// introduced (`next.`) or retired (`previous.`) follows on a second line: LiveKit accepts tokens
/// signed with either, the authorization service signs with the first (the current one).
pub fn livekit_keys(s: &mxstack_spec::Secrets) -> String {
    use mxstack_spec::SecretName::{LivekitApiKey, LivekitApiSecret};
    s.accepted(LivekitApiKey)
        .into_iter()
        .zip(s.accepted(LivekitApiSecret))
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The authorization service's public URL (`livekit_service_url`).
pub fn service_url(c: &Config) -> String {
    format!("https://{}", c.hostnames().livekit_jwt)
}

/// The MatrixRTC focus (MSC4143): where clients get LiveKit tokens.
pub fn focus(c: &Config) -> Value {
    json!({ "type": "livekit", "livekit_service_url": service_url(c) })
}

/// The service's config. `livekit_api_url`: LiveKit's HTTP API where rooms are created (None
/// where no SFU runs: the local stack).
pub fn config(
    t: &Topology,
    addr: &dyn Addressing,
    listen: &str,
    livekit_api_url: Option<String>,
) -> RtcAuthConfig {
    let main = &t.processes()[0];
    let hs = addr.http(main);
    RtcAuthConfig {
        listen: listen.into(),
        server_name: t.config.domain.clone(),
        homeserver_url: format!("http://{}:{}", hs.host, hs.port),
        livekit_url: format!("wss://{}", t.config.hostnames().livekit),
        livekit_api_url,
        keys_env: ENV_KEYS.into(),
        token_lifetime_secs: TOKEN_LIFETIME_SECS,
    }
}

/// The same as a JSON value (the targets write it as YAML).
pub fn config_value(
    t: &Topology,
    addr: &dyn Addressing,
    listen: &str,
    livekit_api_url: Option<String>,
) -> Value {
    crate::service_config_value(&config(t, addr, listen, livekit_api_url))
}

/// Synapse's settings for Element Call (its self-hosting guide): the room summary API (MSC3266,
/// stable in Synapse 1.163 but still asked for by name), the MSC4143 transports endpoint with our
/// focus, `state_after` in sync (MSC4222) and delayed events (MSC4140) with a maximum delay. The
/// rate limits its key sharing and membership heartbeats need are in `crate::ratelimits`, for
/// every deployment.
pub fn synapse_settings(c: &Config) -> Vec<(&'static str, Value)> {
    vec![
        (
            "experimental_features",
            json!({ "msc3266_enabled": true, "msc4143_enabled": true, "msc4222_enabled": true }),
        ),
        ("max_event_delay_duration", json!(MAX_EVENT_DELAY)),
        ("matrix_rtc", json!({ "transports": [focus(c)] })),
    ]
}
