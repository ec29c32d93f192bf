//! The few Matrix client and Synapse admin requests the generator makes, over one shared
//! client. Tokens go into headers only; no error message ever contains one.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::stats::ErrorClass;

/// A failed request: its class (for the counts) and a short reason (for setup errors).
#[derive(Debug, Clone)]
pub struct Failure {
    pub class: ErrorClass,
    pub status: Option<u16>,
    pub reason: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.status {
            Some(s) => write!(f, "HTTP {s}: {}", self.reason),
            None => write!(f, "{}", self.reason),
        }
    }
}

#[derive(Clone)]
pub struct Api {
    pub client: reqwest::Client,
    pub base: String,
    /// Setup and cleanup wait out a 429 (the router's backpressure or Synapse's limits) as a
    /// client would, within `PATIENCE`; the measured load never does (a 429 there is counted).
    patient: bool,
}

/// How long a patient request keeps retrying 429s.
const PATIENCE: Duration = Duration::from_secs(120);

/// A path segment or query value, percent-encoded (Matrix IDs hold `!`, `@`, `:`).
pub fn escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Api {
    /// `pool` idle connections kept per host: one per long-poll plus the concurrent senders, so
    /// that a finished request's connection is reused instead of a new one opened.
    pub fn new(base: &str, pool: usize) -> Result<Api, String> {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(pool)
            .pool_idle_timeout(Duration::from_secs(90))
            .connect_timeout(Duration::from_secs(10))
            .tcp_nodelay(true)
            .user_agent("mxstack-loadtest")
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Api {
            client,
            base: base.trim_end_matches('/').to_string(),
            patient: false,
        })
    }

    /// The same client, retrying 429s after the wait they ask for (setup, cleanup).
    pub fn patient(&self) -> Api {
        Api {
            patient: true,
            ..self.clone()
        }
    }

    /// One request; 2xx → the JSON body. `timeout` bounds each exchange. A patient client
    /// retries a 429 after its `retry_after_ms` (1 s when absent, at most 10 s).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Body>,
        timeout: Duration,
    ) -> Result<Value, Failure> {
        let start = std::time::Instant::now();
        loop {
            match self
                .call_once(method.clone(), path, token, body.clone(), timeout)
                .await
            {
                Err((f, wait))
                    if self.patient && f.status == Some(429) && start.elapsed() < PATIENCE =>
                {
                    tokio::time::sleep(wait).await
                }
                other => return other.map_err(|(f, _)| f),
            }
        }
    }

    async fn call_once(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Body>,
        timeout: Duration,
    ) -> Result<Value, (Failure, Duration)> {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .timeout(timeout);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req = match body {
            Some(Body::Json(v)) => req
                .header("Content-Type", "application/json")
                .body(v.to_string()),
            Some(Body::Bytes(b)) => req
                .header("Content-Type", "application/octet-stream")
                .body(b),
            None => req,
        };
        let no_wait = |e| (transport(e), Duration::ZERO);
        let resp = req.send().await.map_err(no_wait)?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(no_wait)?;
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        // 201: the admin API's user creation.
        if (200..300).contains(&status) {
            return Ok(v);
        }
        let wait = Duration::from_millis(v["retry_after_ms"].as_u64().unwrap_or(1000).min(10_000));
        Err((
            Failure {
                class: ErrorClass::of_status(status),
                status: Some(status),
                reason: v["error"]
                    .as_str()
                    .or(v["errcode"].as_str())
                    .unwrap_or("no reason given")
                    .chars()
                    .take(200)
                    .collect(),
            },
            wait,
        ))
    }

    pub async fn get(
        &self,
        path: &str,
        token: Option<&str>,
        t: Duration,
    ) -> Result<Value, Failure> {
        self.call(Method::GET, path, token, None, t).await
    }

    pub async fn post(
        &self,
        path: &str,
        token: &str,
        body: Value,
        t: Duration,
    ) -> Result<Value, Failure> {
        self.call(Method::POST, path, Some(token), Some(Body::Json(body)), t)
            .await
    }

    pub async fn put(
        &self,
        path: &str,
        token: &str,
        body: Value,
        t: Duration,
    ) -> Result<Value, Failure> {
        self.call(Method::PUT, path, Some(token), Some(Body::Json(body)), t)
            .await
    }

    pub async fn delete(
        &self,
        path: &str,
        token: &str,
        body: Value,
        t: Duration,
    ) -> Result<Value, Failure> {
        self.call(Method::DELETE, path, Some(token), Some(Body::Json(body)), t)
            .await
    }

    /// Shared-secret registration (crates/local/src/users.rs, over HTTP): nonce, then HMAC.
    pub async fn register(
        &self,
        secret: &str,
        name: &str,
        password: &str,
    ) -> Result<(String, String), Failure> {
        let path = "/_synapse/admin/v1/register";
        let t = Duration::from_secs(30);
        let nonce = self.get(path, None, t).await?;
        let nonce = nonce["nonce"].as_str().unwrap_or_default().to_string();
        let mac = mxstack_topology::synapse::registration_mac(secret, &nonce, name, password, true);
        let body = json!({"nonce": nonce, "username": name, "password": password, "admin": true, "mac": mac});
        let v = self
            .call(Method::POST, path, None, Some(Body::Json(body)), t)
            .await?;
        Ok((
            v["user_id"].as_str().unwrap_or_default().to_string(),
            v["access_token"].as_str().unwrap_or_default().to_string(),
        ))
    }
}

#[derive(Clone)]
pub enum Body {
    Json(Value),
    Bytes(&'static [u8]),
}

fn transport(e: reqwest::Error) -> Failure {
    let class = if e.is_timeout() {
        ErrorClass::Timeout
    } else {
        ErrorClass::Other
    };
    // reqwest's Display names the URL, never headers: no token leaks through it.
    let mut reason = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        reason = format!("{reason}: {s}");
        src = s.source();
    }
    Failure {
        class,
        status: None,
        reason,
    }
}
