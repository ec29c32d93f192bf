//! Plain-HTTP requests for loopback health checks and admin calls (and `mxstack escrow`): reqwest's
//! blocking client, with no TLS, no redirects, no proxy and no connection reuse.
//!
//! Blocking because every caller is synchronous (the supervisor's readiness loop, `mxstack user
//! add`, `mxstack escrow`); reqwest's blocking client runs its own runtime on a thread of its own
//! and panics if called from inside an async context, so none may call this from async code.

use std::sync::OnceLock;
use std::time::Duration;

use reqwest::blocking::Client;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, Url};

pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

pub fn request(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
    timeout: Duration,
) -> std::io::Result<Response> {
    request_to("127.0.0.1", port, method, path, None, body, timeout)
}

/// [`request`] to any host (`[v6]` brackets allowed) with an optional `Authorization: Bearer`
/// token (`mxstack escrow` talks to a homeserver this way). `timeout` bounds the whole exchange,
/// from connecting to the last byte of the body.
pub fn request_to(
    host: &str,
    port: u16,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<&serde_json::Value>,
    timeout: Duration,
) -> std::io::Result<Response> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let url = Url::parse(&format!("http://{authority}{path}"))
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let method = Method::from_bytes(method.as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut req = client()?.request(method, url).timeout(timeout);
    if let Some(token) = bearer {
        req = req.header(AUTHORIZATION, format!("Bearer {token}"));
    }
    if let Some(b) = body {
        req = req
            .header(CONTENT_TYPE, "application/json")
            .body(b.to_string());
    }
    let r = req.send().map_err(io_error)?;
    let status = r.status().as_u16();
    let body = r.bytes().map_err(io_error)?.to_vec();
    Ok(Response { status, body })
}

/// One client for the process: each blocking client owns a runtime thread, and the supervisor
/// polls readiness every few hundred milliseconds.
fn client() -> std::io::Result<&'static Client> {
    static CLIENT: OnceLock<Client> = OnceLock::new();
    if let Some(c) = CLIENT.get() {
        return Ok(c);
    }
    let c = Client::builder()
        .user_agent("mxstack")
        // Loopback and a homeserver named on the command line: an HTTP_PROXY in the
        // environment must not reroute them.
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        // A fresh connection each time, as before: a service restarted by the supervisor
        // leaves no stale pooled connection behind.
        .pool_max_idle_per_host(0)
        .build()
        .map_err(io_error)?;
    Ok(CLIENT.get_or_init(|| c))
}

/// The error with its causes (reqwest's own message names only the URL; the cause, such as
/// "Connection refused", is what a person needs to read).
fn io_error(e: reqwest::Error) -> std::io::Error {
    let kind = if e.is_timeout() {
        std::io::ErrorKind::TimedOut
    } else {
        std::io::ErrorKind::Other
    };
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    std::io::Error::new(kind, text)
}

#[cfg(test)]
mod tests {
    //! Against real sockets on 127.0.0.1 that answer with fixed bytes: the wire forms (chunked
    //! bodies, a server that never answers) that a real service produces only by chance.

    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::time::Instant;

    /// Serves one connection: reads the request head and `Content-Length` body, answers
    /// `reply`, and hands back what it read.
    fn serve_once(reply: &'static [u8]) -> (u16, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let h = std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            let mut r = BufReader::new(s);
            let mut head = String::new();
            loop {
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                head.push_str(&line);
                if line == "\r\n" {
                    break;
                }
            }
            let len = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            let mut body = vec![0; len];
            r.read_exact(&mut body).unwrap();
            r.get_mut().write_all(reply).unwrap();
            head + &String::from_utf8(body).unwrap()
        });
        (port, h)
    }

    #[test]
    fn chunked_body_is_joined() {
        let (port, h) = serve_once(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
              7\r\n{\"ok\": \r\n5\r\ntrue}\r\n0\r\n\r\n",
        );
        let r = request(port, "GET", "/health", None, Duration::from_secs(5)).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.json(), Some(serde_json::json!({"ok": true})));
        let req = h.join().unwrap();
        assert!(req.starts_with("GET /health HTTP/1.1\r\n"), "{req}");
    }

    #[test]
    fn post_carries_json_bearer_and_returns_any_status() {
        let (port, h) = serve_once(
            b"HTTP/1.1 403 Forbidden\r\nContent-Length: 21\r\nContent-Type: application/json\r\n\r\n\
              {\"errcode\":\"M_NOPE\"}\n",
        );
        let body = serde_json::json!({"kind": "recovery_key", "key": "k"});
        let r = request_to(
            "[127.0.0.1]",
            port,
            "POST",
            "/_synapse/client/x?a=b",
            Some("tok"),
            Some(&body),
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(r.status, 403);
        assert_eq!(r.json().unwrap()["errcode"], "M_NOPE");
        let req = h.join().unwrap();
        let lower = req.to_ascii_lowercase();
        assert!(
            req.starts_with("POST /_synapse/client/x?a=b HTTP/1.1\r\n"),
            "{req}"
        );
        assert!(lower.contains("\r\nauthorization: bearer tok\r\n"), "{req}");
        assert!(
            lower.contains("\r\ncontent-type: application/json\r\n"),
            "{req}"
        );
        assert!(
            lower.contains(&format!("\r\nhost: 127.0.0.1:{port}\r\n")),
            "{req}"
        );
        assert!(lower.contains("\r\nuser-agent: mxstack\r\n"), "{req}");
        assert!(req.ends_with(&body.to_string()), "{req}");
    }

    #[test]
    fn redirects_are_returned_not_followed() {
        let (port, h) = serve_once(
            b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:1/elsewhere\r\nContent-Length: 0\r\n\r\n",
        );
        let r = request(port, "GET", "/", None, Duration::from_secs(5)).unwrap();
        assert_eq!(r.status, 302);
        h.join().unwrap();
    }

    #[test]
    fn a_silent_server_times_out_and_a_closed_port_is_an_error() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let start = Instant::now();
        let e = request(port, "GET", "/", None, Duration::from_millis(300))
            .err()
            .expect("no answer is an error");
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{:?}",
            start.elapsed()
        );
        drop(listener);
        let e = request(port, "GET", "/", None, Duration::from_secs(2))
            .err()
            .expect("a closed port is an error");
        assert!(e.to_string().to_lowercase().contains("refused"), "{e}");
    }

    #[test]
    fn a_v6_literal_is_bracketed() {
        let Ok(listener) = TcpListener::bind("[::1]:0") else {
            return; // no IPv6 loopback on this machine
        };
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        // Both spellings make a valid URL: the error is about the connection, not the address.
        for host in ["::1", "[::1]"] {
            let e = request_to(host, port, "GET", "/", None, None, Duration::from_secs(2))
                .err()
                .unwrap();
            assert_ne!(e.kind(), std::io::ErrorKind::InvalidInput, "{host}: {e}");
        }
    }
}
