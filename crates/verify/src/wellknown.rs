//! `/.well-known/matrix/client` and `/server`: what they must say, given the model.

use serde_json::Value;

/// The client file must point at `expected` (the public client URL; a trailing slash is fine).
pub fn check_client(body: &Value, expected: &str) -> Result<String, String> {
    let Some(base) = body["m.homeserver"]["base_url"].as_str() else {
        return Err("no m.homeserver.base_url in it".into());
    };
    if base.trim_end_matches('/') != expected.trim_end_matches('/') {
        return Err(format!(
            "m.homeserver.base_url is {base}, the config's client URL is {expected}"
        ));
    }
    Ok(format!("m.homeserver.base_url = {base}"))
}

/// The server file must delegate to `expected` (`host:port`).
pub fn check_server(body: &Value, expected: &str) -> Result<String, String> {
    match body["m.server"].as_str() {
        None => Err("no m.server in it".into()),
        Some(s) if s == expected => Ok(format!("m.server = {s}")),
        Some(s) => Err(format!("m.server is {s}, expected {expected}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_client_file_must_name_the_public_url() {
        let ok = json!({"m.homeserver": {"base_url": "https://matrix.acme.eu/"}});
        assert!(check_client(&ok, "https://matrix.acme.eu").is_ok());
        let wrong = json!({"m.homeserver": {"base_url": "https://old.acme.eu"}});
        let e = check_client(&wrong, "https://matrix.acme.eu").unwrap_err();
        assert!(
            e.contains("old.acme.eu") && e.contains("https://matrix.acme.eu"),
            "{e}"
        );
        assert!(check_client(&json!({"m.server": "x"}), "https://matrix.acme.eu").is_err());
        assert!(check_client(&Value::Null, "https://matrix.acme.eu").is_err());
    }

    #[test]
    fn the_server_file_must_delegate_to_the_matrix_host() {
        assert!(check_server(
            &json!({"m.server": "matrix.acme.eu:443"}),
            "matrix.acme.eu:443"
        )
        .is_ok());
        assert!(
            check_server(&json!({"m.server": "matrix.acme.eu"}), "matrix.acme.eu:443").is_err()
        );
        assert!(check_server(&json!({}), "matrix.acme.eu:443").is_err());
    }
}
