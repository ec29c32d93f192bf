//! The HTTP client every check uses: reqwest's blocking client over rustls (the platform's roots
//! plus `--ca`), no redirects, optional name overrides (`--connect-to`). Access tokens travel
//! only in the Authorization header, so no error message (which names the URL) carries one.

use std::net::SocketAddr;
use std::time::Duration;

use reqwest::blocking::Client;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use reqwest::Method;

use crate::error::VerifyError;
use crate::secret::Secret;

pub struct Http {
    client: Client,
}

/// A reply: status and body.
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
    /// Synapse's `errcode: error`, else the start of the body.
    pub fn reason(&self) -> String {
        let v = self.json();
        match (v["errcode"].as_str(), v["error"].as_str()) {
            (Some(c), Some(e)) => format!("{c}: {e}"),
            _ => String::from_utf8_lossy(&self.body[..self.body.len().min(200)]).into_owned(),
        }
    }
}

/// What a request sends.
pub enum Body<'a> {
    None,
    Json(&'a serde_json::Value),
    Bytes(&'a [u8], &'a str),
}

impl Http {
    /// `extra_ca`: PEM certificates trusted besides the platform's; `resolve`: hostnames sent to
    /// a fixed address instead of DNS.
    pub fn new(
        extra_ca: &[Vec<u8>],
        resolve: &[(String, SocketAddr)],
    ) -> Result<Http, VerifyError> {
        let mut certs = Vec::new();
        for pem in extra_ca {
            let found = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| VerifyError::Client(e.to_string()))?;
            certs.extend(found);
        }
        let mut b = Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .tls_certs_merge(certs);
        for (host, addr) in resolve {
            b = b.resolve(host, *addr);
        }
        let client = b.build().map_err(|e| VerifyError::Client(e.to_string()))?;
        Ok(Http { client })
    }

    pub fn get(
        &self,
        url: &str,
        token: Option<&Secret>,
        timeout: Duration,
    ) -> Result<Reply, String> {
        self.send(Method::GET, url, token, Body::None, timeout)
    }

    pub fn send(
        &self,
        method: Method,
        url: &str,
        token: Option<&Secret>,
        body: Body,
        timeout: Duration,
    ) -> Result<Reply, String> {
        let mut req = self.client.request(method, url).timeout(timeout);
        if let Some(t) = token {
            req = req.header(AUTHORIZATION, format!("Bearer {}", t.expose()));
        }
        req = match body {
            Body::None => req,
            Body::Json(v) => req
                .header(CONTENT_TYPE, "application/json")
                .body(v.to_string()),
            Body::Bytes(b, ct) => req.header(CONTENT_TYPE, ct).body(b.to_vec()),
        };
        let r = req.send().map_err(|e| describe(&e, url, timeout))?;
        let status = r.status().as_u16();
        let body = r.bytes().map_err(|e| describe(&e, url, timeout))?.to_vec();
        Ok(Reply { status, body })
    }
}

/// A transport error in one line: what happened, where, and the innermost cause.
fn describe(e: &reqwest::Error, url: &str, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!("{url}: no answer within {} s", timeout.as_secs());
    }
    let mut cause = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    let what = if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    format!("{url}: {what}: {cause}")
}
