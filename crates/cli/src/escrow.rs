//! `mxstack escrow`: the reference client of the key escrow endpoint (docs/ESCROW.md).
//!
//! POSTs `{"kind", "key"}` with the user's access token to `/_synapse/client/mxstack/escrow`
//! and prints what the server answered. Plain HTTP only (this binary carries no TLS stack): give
//! it the homeserver's or router's `http://` address.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use mxstack_topology::escrow::ESCROW_PATH;
use serde_json::{json, Value};

/// The environment variable holding the access token when no file is given.
pub const TOKEN_ENV: &str = "MXSTACK_ACCESS_TOKEN";

pub fn escrow(
    homeserver: &str,
    token_file: Option<&Path>,
    kind: &str,
    key_file: &Path,
    json_out: bool,
) -> Result<ExitCode, String> {
    let token = match token_file {
        Some(f) => std::fs::read_to_string(f)
            .map_err(|e| format!("cannot read the access token file {}: {e}", f.display()))?,
        None => std::env::var(TOKEN_ENV)
            .map_err(|_| format!("no access token: pass --access-token-file or set {TOKEN_ENV}"))?,
    };
    let token = token.trim();
    if token.is_empty() {
        return Err("the access token is empty".into());
    }
    let key = std::fs::read_to_string(key_file)
        .map_err(|e| format!("cannot read the key file {}: {e}", key_file.display()))?;
    let key = key.trim();
    if key.is_empty() {
        return Err(format!("the key file {} is empty", key_file.display()));
    }
    let (host, port, base) = parse_http_url(homeserver)?;
    let body = json!({ "kind": kind, "key": key });
    let r = mxstack_local::http::request_to(
        &host,
        port,
        "POST",
        &format!("{base}{ESCROW_PATH}"),
        Some(token),
        Some(&body),
        Duration::from_secs(30),
    )
    .map_err(|e| format!("{homeserver}: {e}"))?;
    let (status, reply) = (r.status, r.body);
    let reply: Value = serde_json::from_slice(&reply)
        .unwrap_or_else(|_| json!({ "error": String::from_utf8_lossy(&reply).trim().to_string() }));
    let ok = status == 200 && reply.get("escrowed") == Some(&Value::Bool(true));
    if json_out {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "status": status, "response": reply }))
                .expect("json")
        );
    } else if ok {
        println!(
            "escrowed the {kind} of {} for key backup version {} (vault version {})",
            reply["user_id"].as_str().unwrap_or("?"),
            reply["backup_version"].as_str().unwrap_or("?"),
            reply["vault_version"]
        );
    }
    if ok {
        return Ok(ExitCode::SUCCESS);
    }
    let reason = format!(
        "HTTP {status} {}: {}",
        reply["errcode"].as_str().unwrap_or(""),
        reply["error"].as_str().unwrap_or("(no reason given)")
    );
    if json_out {
        Ok(ExitCode::from(1))
    } else {
        Err(format!("the server refused the key: {reason}"))
    }
}

/// `http://host[:port][/base]` -> (host, port, base without trailing slash).
fn parse_http_url(url: &str) -> Result<(String, u16, String), String> {
    let rest = if let Some(r) = url.strip_prefix("http://") {
        r
    } else if url.starts_with("https://") {
        return Err(format!(
            "{url}: this build of mxstack speaks plain HTTP only; give the homeserver's internal \
             http:// address (e.g. the router), or send the same request with any HTTPS client \
             (docs/ESCROW.md)"
        ));
    } else {
        return Err(format!("{url}: --homeserver must be an http:// URL"));
    };
    let (authority, base) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') => (
            h.to_string(),
            p.parse::<u16>()
                .map_err(|_| format!("{url}: bad port `{p}`"))?,
        ),
        _ => (authority.to_string(), 80),
    };
    if host.is_empty() {
        return Err(format!("{url}: no host"));
    }
    Ok((host, port, base.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_http_url("http://127.0.0.1:8008").unwrap(),
            ("127.0.0.1".into(), 8008, "".into())
        );
        assert_eq!(
            parse_http_url("http://matrix.local/").unwrap(),
            ("matrix.local".into(), 80, "".into())
        );
        assert_eq!(
            parse_http_url("http://h:1/prefix/").unwrap(),
            ("h".into(), 1, "/prefix".into())
        );
        assert!(parse_http_url("https://matrix.example.org")
            .unwrap_err()
            .contains("plain HTTP"));
        assert!(parse_http_url("ftp://x").is_err());
    }
}
