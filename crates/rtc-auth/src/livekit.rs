//! Creating a call's room on LiveKit (Twirp `livekit.RoomService/CreateRoom`, JSON), as
//! lk-jwt-service does for full-access users before it hands out their token. LiveKit runs
//! with `room.auto_create: false`, so a participant's token (which has no `roomCreate`) can only
//! join a room this service created: nobody creates rooms on the SFU but our own users, through
//! here. CreateRoom of an existing room returns it unchanged.

use crate::token::{room_service_token, Keys};

/// A room nobody joins is closed after 5 minutes; after the last participant left, 20 seconds
/// (lk-jwt-service's values).
pub const EMPTY_TIMEOUT_SECS: u32 = 5 * 60;
pub const DEPARTURE_TIMEOUT_SECS: u32 = 20;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CreateError {
    #[error("LiveKit refused CreateRoom: HTTP {0}")]
    Refused(u16),
    #[error("LiveKit cannot be reached: {0}")]
    Unreachable(String),
}

/// The request body.
pub fn create_room_body(room: &str) -> serde_json::Value {
    serde_json::json!({
        "name": room,
        "empty_timeout": EMPTY_TIMEOUT_SECS,
        "departure_timeout": DEPARTURE_TIMEOUT_SECS,
    })
}

/// Creates `room` (or finds it) on the LiveKit at `api_url`.
pub async fn create_room(
    client: &reqwest::Client,
    api_url: &str,
    keys: &Keys,
    room: &str,
    now: u64,
) -> Result<(), CreateError> {
    let url = format!(
        "{}/twirp/livekit.RoomService/CreateRoom",
        api_url.trim_end_matches('/')
    );
    let resp = client
        .post(url)
        .bearer_auth(room_service_token(keys, now))
        .json(&create_room_body(room))
        .send()
        .await
        .map_err(|e| {
            CreateError::Unreachable(
                if e.is_timeout() {
                    "timeout"
                } else {
                    "request failed"
                }
                .into(),
            )
        })?;
    if !resp.status().is_success() {
        return Err(CreateError::Refused(resp.status().as_u16()));
    }
    Ok(())
}
