//! Fetching media from the media workers with the caller's own credentials.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName};

/// Request headers passed to the media worker: the caller's token (so the homeserver decides
/// who may read what, on every request) and the client address the router saw.
const FORWARDED: [&str; 5] = [
    "authorization",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "user-agent",
];

/// Response headers never copied to the client (hop-by-hop, or recomputed here).
const NOT_COPIED: [&str; 8] = [
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-authenticate",
    "content-length",
];

pub struct Upstream {
    client: reqwest::Client,
    bases: Vec<String>,
    next: AtomicUsize,
}

impl Upstream {
    pub fn new(bases: &[String]) -> Upstream {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .read_timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .expect("http client");
        Upstream {
            client,
            bases: bases
                .iter()
                .map(|b| b.trim_end_matches('/').to_string())
                .collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// GET `path_and_query` from the next media worker; a worker that refuses the connection is
    /// skipped for the next one.
    pub async fn get(
        &self,
        path_and_query: &str,
        incoming: &HeaderMap,
    ) -> Result<reqwest::Response, String> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut last = String::new();
        for i in 0..self.bases.len() {
            let base = &self.bases[(start + i) % self.bases.len()];
            let mut req = self.client.get(format!("{base}{path_and_query}"));
            for name in FORWARDED {
                for v in incoming.get_all(name) {
                    req = req.header(name, v.clone());
                }
            }
            match req.send().await {
                Ok(r) => return Ok(r),
                Err(e) if e.is_connect() => last = format!("{base}: {e}"),
                Err(e) => return Err(format!("{base}: {e}")),
            }
        }
        Err(last)
    }
}

/// The media worker's response headers a client should see.
pub fn copy_headers(from: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (k, v) in from {
        if !NOT_COPIED.contains(&k.as_str()) {
            out.append(HeaderName::from(k), v.clone());
        }
    }
    out
}
