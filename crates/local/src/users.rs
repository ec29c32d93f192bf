//! `mxstack user add`: Synapse's shared-secret registration (the admin API's nonce + HMAC-SHA1).

use std::time::Duration;

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
    let body = serde_json::json!({
        "nonce": nonce, "username": name, "password": password, "admin": admin,
        "mac": mxstack_topology::synapse::registration_mac(shared_secret, &nonce, name, password, admin),
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
