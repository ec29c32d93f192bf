//! The throwaway user and what it does: register through the admin API (shared-secret HMAC),
//! create a room, send and receive, upload and download, try EICAR, ask for TURN credentials,
//! then remove everything it made.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use crate::http::{Body, Http, Reply};
use crate::secret::Secret;

const T: Duration = Duration::from_secs(20);

/// The EICAR test file (harmless; every antivirus reports it).
pub const EICAR: &[u8] = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

pub struct Session<'a> {
    http: &'a Http,
    base: &'a str,
    pub user_id: String,
    token: Secret,
    /// What cleanup must remove.
    pub room: Option<String>,
    pub media: Vec<String>,
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).expect("the OS has randomness");
    hex::encode(b)
}

/// A path segment with Matrix IDs (`!room:host`) escaped.
pub fn escape(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub use mxstack_topology::synapse::registration_mac;

fn expect_ok(r: Reply, what: &str) -> Result<Value, String> {
    if r.status == 200 {
        Ok(r.json())
    } else {
        Err(format!("{what}: {} {}", r.status, r.reason()))
    }
}

impl<'a> Session<'a> {
    /// Registers `mxstack-verify-<random>` as an admin with the shared secret.
    pub fn register(http: &'a Http, base: &'a str, secret: &Secret) -> Result<Session<'a>, String> {
        let url = format!("{base}/_synapse/admin/v1/register");
        let nonce = expect_ok(http.get(&url, None, T)?, "GET the registration nonce")?;
        let nonce = nonce["nonce"]
            .as_str()
            .ok_or("Synapse gave no registration nonce")?;
        let name = format!("mxstack-verify-{}", random_hex(6));
        let password = Secret::new(random_hex(16));
        let body = json!({
            "nonce": nonce, "username": name, "password": password.expose(), "admin": true,
            "mac": registration_mac(secret.expose(), nonce, &name, password.expose(), true),
        });
        let r = http.send(Method::POST, &url, None, Body::Json(&body), T)?;
        let v = expect_ok(r, "registration")?;
        let token = v["access_token"]
            .as_str()
            .ok_or("registration returned no access token")?;
        Ok(Session {
            http,
            base,
            user_id: v["user_id"].as_str().unwrap_or(&name).to_string(),
            token: Secret::new(token),
            room: None,
            media: Vec::new(),
        })
    }

    fn call(&self, method: Method, path: &str, body: Body) -> Result<Reply, String> {
        let url = format!("{}{path}", self.base);
        self.http.send(method, &url, Some(&self.token), body, T)
    }

    /// Creates a room, sends a message, and waits for /sync to return it.
    pub fn send_and_receive(&mut self) -> Result<String, String> {
        let v = expect_ok(
            self.call(
                Method::POST,
                "/_matrix/client/v3/createRoom",
                Body::Json(&json!({"preset": "private_chat", "name": "mxstack verify"})),
            )?,
            "create a room",
        )?;
        let room = v["room_id"]
            .as_str()
            .ok_or("createRoom returned no room_id")?
            .to_string();
        self.room = Some(room.clone());
        let marker = format!("mxstack verify {}", random_hex(8));
        let path = format!(
            "/_matrix/client/v3/rooms/{}/send/m.room.message/{}",
            escape(&room),
            random_hex(8)
        );
        let v = expect_ok(
            self.call(
                Method::PUT,
                &path,
                Body::Json(&json!({"msgtype": "m.text", "body": marker})),
            )?,
            "send a message",
        )?;
        let event = v["event_id"]
            .as_str()
            .ok_or("send returned no event_id")?
            .to_string();
        let waited = self.sync_until(&room, &event)?;
        Ok(format!(
            "room {room}: sent {event}, received by /sync after {:.1} s",
            waited.as_secs_f64()
        ))
    }

    fn sync_until(&self, room: &str, event: &str) -> Result<Duration, String> {
        let start = Instant::now();
        let filter =
            escape(&json!({"room": {"rooms": [room], "timeline": {"limit": 20}}}).to_string());
        while start.elapsed() < Duration::from_secs(20) {
            let path = format!("/_matrix/client/v3/sync?timeout=1000&filter={filter}");
            let v = expect_ok(self.call(Method::GET, &path, Body::None)?, "sync")?;
            let events = &v["rooms"]["join"][room]["timeline"]["events"];
            if events
                .as_array()
                .is_some_and(|a| a.iter().any(|e| e["event_id"] == event))
            {
                return Ok(start.elapsed());
            }
        }
        Err(format!("/sync did not return {event} within 20 s"))
    }

    fn upload(&self, bytes: &[u8], name: &str) -> Result<Reply, String> {
        let path = format!("/_matrix/media/v3/upload?filename={name}");
        self.call(Method::POST, &path, Body::Bytes(bytes, "text/plain"))
    }

    fn remember(&mut self, r: &Reply) -> Option<String> {
        let uri = r.json()["content_uri"].as_str()?.to_string();
        self.media.push(uri.clone());
        Some(uri)
    }

    /// Uploads a clean file and downloads it through the authenticated media API.
    pub fn media_round_trip(&mut self) -> Result<String, String> {
        let content = format!("mxstack verify {}\n", random_hex(16)).into_bytes();
        let r = self.upload(&content, "verify.txt")?;
        if r.status != 200 {
            return Err(format!("upload refused: {} {}", r.status, r.reason()));
        }
        let uri = self.remember(&r).ok_or("upload returned no content_uri")?;
        let id = uri.strip_prefix("mxc://").ok_or("bad content_uri")?;
        let r = self.call(
            Method::GET,
            &format!("/_matrix/client/v1/media/download/{id}"),
            Body::None,
        )?;
        if r.status != 200 {
            return Err(format!("download of {uri}: {} {}", r.status, r.reason()));
        }
        if r.body != content {
            return Err(format!(
                "download of {uri} returned other bytes ({} bytes)",
                r.body.len()
            ));
        }
        Ok(format!(
            "uploaded and downloaded {uri} ({} bytes, identical)",
            content.len()
        ))
    }

    /// Uploads EICAR: Ok(detail) when refused as infected; Err otherwise.
    pub fn eicar(&mut self) -> Result<String, String> {
        let r = self.upload(EICAR, "eicar.com.txt")?;
        match r.status {
            400 | 403 => Ok(format!("EICAR upload refused: {} {}", r.status, r.reason())),
            200 => {
                let uri = self.remember(&r).unwrap_or_default();
                Err(format!(
                    "EICAR was accepted and stored as {uri}: uploads are not scanned"
                ))
            }
            s => Err(format!(
                "EICAR refused for an error, not as infected: {s} {}",
                r.reason()
            )),
        }
    }

    /// Asks for TURN credentials; they must carry exactly the expected URIs.
    pub fn turn(&self, expected: &[String]) -> Result<String, String> {
        let v = expect_ok(
            self.call(
                Method::GET,
                "/_matrix/client/v3/voip/turnServer",
                Body::None,
            )?,
            "turnServer",
        )?;
        let uris: Vec<String> = v["uris"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|u| u.as_str().map(str::to_owned))
            .collect();
        let has = |k: &str| v[k].as_str().is_some_and(|s| !s.is_empty());
        if !has("username") || !has("password") {
            return Err(
                "no TURN username/password in the answer (turn_shared_secret unset?)".into(),
            );
        }
        let mut want = expected.to_vec();
        let mut got = uris.clone();
        want.sort();
        got.sort();
        if got != want {
            return Err(format!("TURN URIs {uris:?}, the model's are {expected:?}"));
        }
        Ok(format!(
            "username, password and {} URIs ({}), ttl {} s",
            uris.len(),
            uris.join(", "),
            v["ttl"]
        ))
    }

    /// Removes the media, the room (purged) and the user (deactivated, erased): what is left
    /// over, if anything, is named in the error.
    pub fn cleanup(self) -> Result<String, String> {
        let mut left = Vec::new();
        for uri in &self.media {
            let id = uri.trim_start_matches("mxc://");
            match self.call(
                Method::DELETE,
                &format!("/_synapse/admin/v1/media/{id}"),
                Body::None,
            ) {
                Ok(r) if r.status == 200 => {}
                Ok(r) => left.push(format!("media {uri} ({} {})", r.status, r.reason())),
                Err(e) => left.push(format!("media {uri} ({e})")),
            }
        }
        if let Some(room) = &self.room {
            if let Err(e) = self.delete_room(room) {
                left.push(format!("room {room} ({e})"));
            }
        }
        let deactivate = format!("/_synapse/admin/v1/deactivate/{}", escape(&self.user_id));
        match self.call(
            Method::POST,
            &deactivate,
            Body::Json(&json!({"erase": true})),
        ) {
            Ok(r) if r.status == 200 => {}
            Ok(r) => left.push(format!(
                "user {} ({} {})",
                self.user_id,
                r.status,
                r.reason()
            )),
            Err(e) => left.push(format!("user {} ({e})", self.user_id)),
        }
        if !left.is_empty() {
            return Err(format!("left behind: {}", left.join("; ")));
        }
        Ok(format!(
            "deleted {} media, purged {}, deactivated and erased {}",
            self.media.len(),
            self.room.as_deref().unwrap_or("no room"),
            self.user_id
        ))
    }

    fn delete_room(&self, room: &str) -> Result<(), String> {
        let path = format!("/_synapse/admin/v2/rooms/{}", escape(room));
        let v = expect_ok(
            self.call(Method::DELETE, &path, Body::Json(&json!({"purge": true})))?,
            "delete",
        )?;
        let id = v["delete_id"].as_str().ok_or("no delete_id")?;
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            let v = expect_ok(
                self.call(
                    Method::GET,
                    &format!("/_synapse/admin/v2/rooms/delete_status/{id}"),
                    Body::None,
                )?,
                "delete status",
            )?;
            match v["status"].as_str() {
                Some("complete") => return Ok(()),
                Some("failed") => return Err(format!("purge failed: {}", v["error"])),
                _ => std::thread::sleep(Duration::from_millis(300)),
            }
        }
        Err("purge not complete within 30 s".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrix_ids_are_escaped_in_paths() {
        assert_eq!(escape("!abc:acme.eu"), "%21abc%3Aacme.eu");
        assert_eq!(
            escape("@mxstack-verify-1:acme.eu"),
            "%40mxstack-verify-1%3Aacme.eu"
        );
    }

    #[test]
    fn the_registration_mac_is_synapses_hmac_sha1() {
        use hmac::{Hmac, Mac};
        use sha1::Sha1;
        // Synapse's documented example shape: hex of HMAC-SHA1(secret, nonce\0user\0password\0admin).
        let a = registration_mac("s", "n", "u", "p", true);
        let b = registration_mac("s", "n", "u", "p", false);
        assert_eq!(a.len(), 40);
        assert_ne!(a, b);
        let mut mac = Hmac::<Sha1>::new_from_slice(b"s").unwrap();
        mac.update(b"n\x00u\x00p\x00admin");
        assert_eq!(a, hex::encode(mac.finalize().into_bytes()));
    }
}
