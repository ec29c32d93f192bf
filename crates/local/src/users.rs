//! `mxstack user add`: Synapse's shared-secret registration (the admin API's nonce + HMAC-SHA1).

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha1::Sha1;

use crate::http;

#[derive(Debug, serde::Serialize)]
pub struct NewUser {
    pub user_id: String,
    pub password: String,
    pub access_token: String,
    pub device_id: String,
}

pub fn register(
    router_port: u16,
    shared_secret: &str,
    name: &str,
    password: &str,
    admin: bool,
) -> Result<NewUser, String> {
    let t = Duration::from_secs(30);
    let path = "/_synapse/admin/v1/register";
    let nonce = http::request(router_port, "GET", path, None, t)
        .map_err(|e| format!("cannot reach Synapse: {e}"))?;
    let nonce = nonce
        .json()
        .and_then(|v| v["nonce"].as_str().map(str::to_owned))
        .ok_or("Synapse gave no registration nonce")?;
    let mut mac =
        Hmac::<Sha1>::new_from_slice(shared_secret.as_bytes()).expect("hmac accepts any key");
    mac.update(nonce.as_bytes());
    mac.update(b"\x00");
    mac.update(name.as_bytes());
    mac.update(b"\x00");
    mac.update(password.as_bytes());
    mac.update(b"\x00");
    mac.update(if admin {
        b"admin".as_slice()
    } else {
        b"notadmin".as_slice()
    });
    let body = serde_json::json!({
        "nonce": nonce, "username": name, "password": password, "admin": admin,
        "mac": hex::encode(mac.finalize().into_bytes()),
    });
    let r = http::request(router_port, "POST", path, Some(&body), t)
        .map_err(|e| format!("cannot reach Synapse: {e}"))?;
    let v = r.json().unwrap_or_default();
    if r.status != 200 {
        return Err(format!(
            "registration failed ({}): {}",
            r.status,
            v["error"].as_str().unwrap_or("no reason given")
        ));
    }
    Ok(NewUser {
        user_id: v["user_id"].as_str().unwrap_or_default().to_string(),
        password: password.to_string(),
        access_token: v["access_token"].as_str().unwrap_or_default().to_string(),
        device_id: v["device_id"].as_str().unwrap_or_default().to_string(),
    })
}
