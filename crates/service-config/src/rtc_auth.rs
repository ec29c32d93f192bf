//! The MatrixRTC authorization service's config file (`rtc-auth.yaml`; written by
//! `mxstack_topology::rtc_auth::config`, read by `mxstack-rtc-auth`). It holds no secret: the
//! LiveKit API key and secret are read from the environment variable the file names.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RtcAuthConfig {
    /// `host:port` to listen on.
    pub listen: String,
    /// Our homeserver's server name: the only `matrix_server_name` whose OpenID tokens are
    /// accepted (anything else is refused before any network call).
    pub server_name: String,
    /// Base URL (inside the deployment) of a Synapse process serving the `openid` resource; the
    /// service asks it `GET /_matrix/federation/v1/openid/userinfo`.
    pub homeserver_url: String,
    /// The LiveKit signalling URL handed to clients with their token (`wss://...`).
    pub livekit_url: String,
    /// LiveKit's HTTP API inside the deployment (`http://livekit:7880`), where the service
    /// creates a call's room before it hands out the first token for it (LiveKit runs with
    /// `room.auto_create: false`). None: no SFU to create rooms on (the local stack).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub livekit_api_url: Option<String>,
    /// Environment variable holding `<api key>: <api secret>` (LiveKit's LIVEKIT_KEYS format).
    pub keys_env: String,
    /// Lifetime of a LiveKit token, in seconds.
    pub token_lifetime_secs: u64,
}

impl RtcAuthConfig {
    pub fn from_yaml(text: &str) -> Result<RtcAuthConfig, String> {
        serde_saphyr::from_str(text).map_err(|e| e.to_string())
    }
}
