//! Checking a caller's OpenID token with our homeserver.
//!
//! Only our own server's tokens are accepted: a token naming any other `matrix_server_name` is
//! refused before any network call, so the service never contacts a server a caller names
//! (no request forgery through it, nothing leaves an air-gapped site). Upstream lk-jwt-service
//! asks any server and gives foreign users tokens that cannot create rooms; here they get none
//! (README.md, "Decisions").

use serde::Deserialize;

/// An OpenID token as the client sends it (what `POST /user/{userId}/openid/request_token`
/// returned).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenIdToken {
    #[serde(default)]
    pub access_token: String,
    #[serde(default)]
    pub token_type: String,
    #[serde(default)]
    pub matrix_server_name: String,
    #[serde(default)]
    pub expires_in: i64,
}

/// Why a token was not accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    #[error("the token is of server {0}; this service serves only its own homeserver's users")]
    ForeignServer(String),
    #[error("the homeserver did not accept the token (HTTP {0})")]
    Rejected(u16),
    #[error("the homeserver named a user of another server: {0}")]
    ForeignUser(String),
    #[error("the homeserver's answer is not a userinfo document")]
    Malformed,
    #[error("the homeserver cannot be reached: {0}")]
    Unreachable(String),
}

#[derive(Deserialize)]
struct UserInfo {
    sub: String,
}

/// The user a token belongs to, asked of `homeserver_url` (our Synapse) if the token names
/// `server_name`.
pub async fn user_of(
    client: &reqwest::Client,
    homeserver_url: &str,
    server_name: &str,
    token: &OpenIdToken,
) -> Result<String, Refusal> {
    if token.matrix_server_name != server_name {
        return Err(Refusal::ForeignServer(token.matrix_server_name.clone()));
    }
    let url = format!(
        "{}/_matrix/federation/v1/openid/userinfo",
        homeserver_url.trim_end_matches('/')
    );
    let resp = client
        .get(url)
        .query(&[("access_token", token.access_token.as_str())])
        .send()
        .await
        // The error names the URL with the query (the token): keep only its kind.
        .map_err(|e| Refusal::Unreachable(without_url(&e)))?;
    if !resp.status().is_success() {
        return Err(Refusal::Rejected(resp.status().as_u16()));
    }
    let info: UserInfo = resp.json().await.map_err(|_| Refusal::Malformed)?;
    // A user ID is `@localpart:server_name`; the server must be ours.
    let ours = info
        .sub
        .strip_prefix('@')
        .and_then(|rest| rest.split_once(':'))
        .is_some_and(|(local, server)| !local.is_empty() && server == server_name);
    if !ours {
        return Err(Refusal::ForeignUser(info.sub));
    }
    Ok(info.sub)
}

fn without_url(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connection failed".into()
    } else {
        "request failed".into()
    }
}
