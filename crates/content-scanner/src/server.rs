//! The HTTP service: transparent scanning of media downloads, the matrix-content-scanner API,
//! upload scans for the Synapse module, health and metrics.
//!
//! Every media request is fetched from the media workers with the caller's own headers, so the
//! homeserver authorizes every request; clean bytes are passed on, nothing else. Files up to
//! `memory_buffer_bytes`, and up to a quarter of `memory_budget_bytes` while the budget has room,
//! are fetched once and held while scanned (each chunk goes on to clamd as it arrives); other
//! files are scanned in one streaming pass and served in a second streaming pass whose SHA-256
//! must equal the scanned one (if the object changed in between, the response is cut off, so
//! the client sees a failed transfer instead of unscanned bytes).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::json;
use sha2::{Digest as _, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::cache::{Digest, VerdictCache};
use crate::clamd::{Clamd, ScanError, Verdict};
use crate::config::ScannerConfig;
use crate::crypto::{self, Decryptor, EncryptedFile, RequestKey};
use crate::metrics::Metrics;
use crate::upstream::{copy_headers, Upstream};

pub struct Scanner {
    pub cfg: ScannerConfig,
    pub clamd: Clamd,
    pub cache: VerdictCache,
    pub upstream: Upstream,
    pub metrics: Metrics,
    pub key: RequestKey,
    /// KiB that held bodies may take at once (`memory_budget_bytes`): memory stays bounded
    /// under load.
    buffer_budget: Arc<Semaphore>,
}

impl Scanner {
    pub fn new(cfg: ScannerConfig, key: RequestKey) -> Scanner {
        Scanner {
            clamd: Clamd::new(
                &cfg.clamd,
                cfg.clamd_connections,
                Duration::from_secs(cfg.scan_timeout_secs),
            ),
            cache: VerdictCache::new(cfg.verdict_cache_entries),
            upstream: Upstream::new(&cfg.upstreams),
            metrics: Metrics::default(),
            key,
            buffer_budget: Arc::new(Semaphore::new(budget_kib(cfg.memory_budget_bytes) as usize)),
            cfg,
        }
    }
}

type Shared = Arc<Scanner>;

pub fn router(s: Shared) -> Router {
    Router::new()
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/_mxstack/scan", post(upload_scan))
        .route("/_matrix/media_proxy/unstable/public_key", get(public_key))
        .route(
            "/_matrix/media_proxy/unstable/{op}/{server}/{media}",
            get(mcs_get),
        )
        .route("/_matrix/media_proxy/unstable/{op}", post(mcs_post))
        .fallback(transparent)
        .with_state(s)
}

// ---------------------------------------------------------------- responses

/// An error in the reference scanner's format (`reason`, `info`), plus the Matrix `errcode` and
/// `error` so clients that only know the Matrix API show something sensible too.
fn error(status: StatusCode, reason: &str, errcode: &str, info: &str) -> Response {
    let mut r = (
        status,
        Json(json!({"reason": reason, "info": info, "errcode": errcode, "error": info})),
    )
        .into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("10"));
    }
    r
}

fn unrecognized() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
        "M_UNRECOGNIZED",
        "Unrecognized request",
    )
}

fn not_clean() -> Response {
    error(
        StatusCode::FORBIDDEN,
        "MCS_MEDIA_NOT_CLEAN",
        "M_FORBIDDEN",
        "***VIRUS DETECTED***",
    )
}

fn too_large(limit: u64) -> Response {
    error(
        StatusCode::FORBIDDEN,
        "MCS_MEDIA_TOO_LARGE",
        "M_TOO_LARGE",
        &format!("the file is larger than the scan limit of {limit} bytes and was not served"),
    )
}

fn scan_failed(e: &ScanError) -> Response {
    eprintln!("content-scanner: no verdict: {e}");
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "MCS_SCAN_UNAVAILABLE",
        "M_UNKNOWN",
        "the antivirus scan could not be completed; try again later",
    )
}

fn request_failed(why: &str) -> Response {
    eprintln!("content-scanner: media request failed: {why}");
    error(
        StatusCode::BAD_GATEWAY,
        "MCS_MEDIA_REQUEST_FAILED",
        "M_UNKNOWN",
        "The remote server responded with an error",
    )
}

// ---------------------------------------------------------------- the scan pipeline

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Pass the bytes on when clean.
    Serve,
    /// Answer `{"clean": ..., "info": ...}`.
    Report,
}

#[derive(Clone, Copy, PartialEq)]
enum Style {
    /// The router sent a Matrix media request: upstream errors are passed through unchanged.
    Transparent,
    /// The matrix-content-scanner API: upstream errors mapped as the reference maps them.
    Mcs,
}

struct Job {
    path_and_query: String,
    cache_key: String,
    headers: HeaderMap,
    encrypted: Option<EncryptedFile>,
    mode: Mode,
    style: Style,
}

fn count(m: &Metrics, v: &Verdict) {
    match v {
        Verdict::Clean => m.clean.fetch_add(1, Relaxed),
        Verdict::Infected(_) => m.infected.fetch_add(1, Relaxed),
        Verdict::TooLarge { .. } => m.too_large.fetch_add(1, Relaxed),
    };
}

fn report(v: &Verdict) -> Response {
    let info = match v {
        Verdict::Clean => "File is clean".to_string(),
        Verdict::Infected(_) => "***VIRUS DETECTED***".to_string(),
        Verdict::TooLarge { limit } => {
            format!("File is larger than the scan limit of {limit} bytes")
        }
    };
    Json(json!({"clean": *v == Verdict::Clean, "info": info})).into_response()
}

/// Maps a media worker's non-200 answer.
async fn upstream_refusal(style: Style, resp: reqwest::Response) -> Response {
    let status = resp.status();
    let ctype = resp.headers().get(header::CONTENT_TYPE).cloned();
    let body = resp.bytes().await.unwrap_or_default();
    let body = body.slice(..body.len().min(64 * 1024));
    if style == Style::Transparent {
        let mut r = Response::new(Body::from(body));
        *r.status_mut() = StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        if let Some(ct) = ctype {
            r.headers_mut().insert(header::CONTENT_TYPE, ct);
        }
        return r;
    }
    let errcode = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("errcode").and_then(|e| e.as_str()).map(str::to_owned))
        .unwrap_or_default();
    match (status.as_u16(), errcode.as_str()) {
        (404, _) | (400, "M_UNRECOGNIZED") => error(
            StatusCode::NOT_FOUND,
            "M_NOT_FOUND",
            "M_NOT_FOUND",
            "File not found",
        ),
        (401, "M_MISSING_TOKEN") => error(
            StatusCode::UNAUTHORIZED,
            "M_MISSING_TOKEN",
            "M_MISSING_TOKEN",
            "Access token missing from request",
        ),
        (401, "M_UNKNOWN_TOKEN") => error(
            StatusCode::UNAUTHORIZED,
            "M_UNKNOWN_TOKEN",
            "M_UNKNOWN_TOKEN",
            "Invalid access token passed",
        ),
        _ => request_failed(&format!("media worker answered {status}")),
    }
}

async fn run(s: &Scanner, job: Job) -> Response {
    s.metrics.requests.fetch_add(1, Relaxed);
    let resp = match s.upstream.get(&job.path_and_query, &job.headers).await {
        Ok(r) => r,
        Err(e) => {
            s.metrics.upstream_errors.fetch_add(1, Relaxed);
            return request_failed(&e);
        }
    };
    if resp.status() != reqwest::StatusCode::OK {
        return upstream_refusal(job.style, resp).await;
    }
    let limit = s.cfg.max_file_bytes;
    match resp.content_length() {
        Some(len) if len > limit => {
            let v = Verdict::TooLarge { limit };
            count(&s.metrics, &v);
            match job.mode {
                Mode::Serve => too_large(limit),
                Mode::Report => report(&v),
            }
        }
        Some(len) if len <= s.cfg.memory_buffer_bytes => {
            let permit = s
                .buffer_budget
                .clone()
                .acquire_many_owned(budget_kib(len).min(budget_kib(s.cfg.memory_budget_bytes)))
                .await
                .expect("budget never closed");
            buffered(s, job, resp, len, permit).await
        }
        // Bigger files are held too while the budget has room right now (one fetch instead of
        // two); under memory pressure they take the two-pass streaming path instead of waiting.
        Some(len) if len <= s.cfg.memory_budget_bytes / 4 => {
            match s
                .buffer_budget
                .clone()
                .try_acquire_many_owned(budget_kib(len))
            {
                Ok(permit) => buffered(s, job, resp, len, permit).await,
                Err(_) => streamed(s, job, resp).await,
            }
        }
        _ => streamed(s, job, resp).await,
    }
}

fn budget_kib(len: u64) -> u32 {
    len.div_ceil(1024).clamp(1, u32::MAX as u64) as u32
}

/// Scans in-memory bytes (decrypting first when the file is an encrypted attachment), using the
/// verdict cache when these exact bytes were scanned under this key before.
async fn verdict_for(
    s: &Scanner,
    job: &Job,
    body: &[u8],
    digest: &Digest,
) -> Result<Verdict, Response> {
    if let Some(v) = s.cache.get(&job.cache_key, digest) {
        s.metrics.cache_hits.fetch_add(1, Relaxed);
        return Ok(v);
    }
    s.metrics.cache_misses.fetch_add(1, Relaxed);
    let plain;
    let data: &[u8] = match &job.encrypted {
        Some(f) => {
            let mut d = Decryptor::new(f);
            let mut buf = body.to_vec();
            d.update(&mut buf);
            d.verify().map_err(|(reason, info)| {
                error(StatusCode::BAD_REQUEST, reason, "M_UNKNOWN", &info)
            })?;
            plain = buf;
            &plain
        }
        None => body,
    };
    let t = Instant::now();
    match s.clamd.scan_bytes(data).await {
        Ok(v) => {
            s.metrics.observe_scan(t.elapsed().as_secs_f64());
            s.metrics
                .bytes_scanned
                .fetch_add(data.len() as u64, Relaxed);
            s.cache.put(&job.cache_key, *digest, &v);
            Ok(v)
        }
        Err(e) => {
            s.metrics.clamd_errors.fetch_add(1, Relaxed);
            s.metrics.scan_errors.fetch_add(1, Relaxed);
            Err(scan_failed(&e))
        }
    }
}

/// Holds the body in memory while it arrives, sending each chunk on to clamd at once (the scan
/// overlaps the fetch), and serves it from memory when clean: one fetch. When this key was
/// scanned before, the pass only hashes and clamd runs only if the bytes changed.
async fn buffered(
    s: &Scanner,
    job: Job,
    resp: reqwest::Response,
    len: u64,
    budget: OwnedSemaphorePermit,
) -> Response {
    let headers = copy_headers(resp.headers());
    let cached = s.cache.digest_of(&job.cache_key);
    let mut body = Vec::with_capacity(len as usize);
    let verdict = match stream_pass(s, &job, resp, cached.is_some(), Some(&mut body)).await {
        Pass::Refused(r) => return r,
        Pass::Done(_, Some(v)) => {
            s.metrics.cache_misses.fetch_add(1, Relaxed);
            v
        }
        Pass::Done(d, None) => match cached {
            Some((cd, v)) if cd == d => {
                s.metrics.cache_hits.fetch_add(1, Relaxed);
                v
            }
            _ => match verdict_for(s, &job, &body, &d).await {
                Ok(v) => v,
                Err(r) => return r,
            },
        },
    };
    count(&s.metrics, &verdict);
    let length = body.len() as u64;
    deliver(
        job.mode,
        verdict,
        headers,
        held_body(body, budget),
        Some(length),
    )
}

/// A body that keeps its share of the memory budget until hyper has taken the bytes, so the
/// budget bounds what is held for slow clients too, not only while scanning.
fn held_body(body: Vec<u8>, budget: OwnedSemaphorePermit) -> Body {
    let state = (Some(Bytes::from(body)), budget);
    Body::from_stream(futures_util::stream::unfold(
        state,
        |(bytes, budget)| async move {
            bytes.map(|b| (Ok::<_, std::convert::Infallible>(b), (None, budget)))
        },
    ))
}

fn deliver(
    mode: Mode,
    verdict: Verdict,
    headers: HeaderMap,
    body: Body,
    content_length: Option<u64>,
) -> Response {
    match (mode, &verdict) {
        (Mode::Report, v) => report(v),
        (Mode::Serve, Verdict::Clean) => {
            let mut r = Response::new(body);
            *r.headers_mut() = headers;
            if let Some(n) = content_length {
                r.headers_mut()
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(n));
            }
            r
        }
        (Mode::Serve, Verdict::Infected(name)) => {
            eprintln!("content-scanner: refused infected media ({name})");
            not_clean()
        }
        (Mode::Serve, Verdict::TooLarge { limit }) => too_large(*limit),
    }
}

/// Outcome of a streaming pass over the media worker's body.
enum Pass {
    Done(Digest, Option<Verdict>),
    Refused(Response),
}

/// Streams the body once: always hashed; sent to clamd (decrypted when encrypted) unless
/// `hash_only`; appended to `keep` when given. Memory: one network chunk at a time, plus `keep`.
async fn stream_pass(
    s: &Scanner,
    job: &Job,
    resp: reqwest::Response,
    hash_only: bool,
    mut keep: Option<&mut Vec<u8>>,
) -> Pass {
    let limit = s.cfg.max_file_bytes;
    let mut hasher = Sha256::new();
    let mut decryptor = job.encrypted.as_ref().map(Decryptor::new);
    let mut scan = None;
    if !hash_only {
        match s.clamd.start().await {
            Ok(sc) => scan = Some(sc),
            Err(e) => {
                s.metrics.clamd_errors.fetch_add(1, Relaxed);
                s.metrics.scan_errors.fetch_add(1, Relaxed);
                return Pass::Refused(scan_failed(&e));
            }
        }
    }
    let t = Instant::now();
    let mut total: u64 = 0;
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                s.metrics.upstream_errors.fetch_add(1, Relaxed);
                return Pass::Refused(request_failed(&e.to_string()));
            }
        };
        total += chunk.len() as u64;
        if total > limit {
            let v = Verdict::TooLarge { limit };
            return Pass::Done([0; 32], Some(v));
        }
        hasher.update(&chunk);
        if let Some(k) = keep.as_mut() {
            k.extend_from_slice(&chunk);
        }
        if let Some(sc) = scan.as_mut() {
            let sent = match decryptor.as_mut() {
                Some(d) => {
                    let mut plain = chunk.to_vec();
                    d.update(&mut plain);
                    sc.send(&plain).await
                }
                None => sc.send(&chunk).await,
            };
            if let Err(e) = sent {
                s.metrics.clamd_errors.fetch_add(1, Relaxed);
                s.metrics.scan_errors.fetch_add(1, Relaxed);
                return Pass::Refused(scan_failed(&e));
            }
        } else if let Some(d) = decryptor.as_mut() {
            let mut plain = chunk.to_vec();
            d.update(&mut plain);
        }
    }
    if let Some(d) = decryptor {
        if let Err((reason, info)) = d.verify() {
            return Pass::Refused(error(StatusCode::BAD_REQUEST, reason, "M_UNKNOWN", &info));
        }
    }
    let digest: Digest = hasher.finalize().into();
    match scan {
        None => Pass::Done(digest, None),
        Some(sc) => match sc.finish().await {
            Ok(v) => {
                s.metrics.observe_scan(t.elapsed().as_secs_f64());
                s.metrics.bytes_scanned.fetch_add(total, Relaxed);
                s.cache.put(&job.cache_key, digest, &v);
                Pass::Done(digest, Some(v))
            }
            Err(e) => {
                s.metrics.clamd_errors.fetch_add(1, Relaxed);
                s.metrics.scan_errors.fetch_add(1, Relaxed);
                Pass::Refused(scan_failed(&e))
            }
        },
    }
}

/// The second pass: passes chunks on while hashing them, always one chunk behind, so the last
/// chunk is released only after the whole body hashed to the scanned digest. A mismatch ends the
/// body with an error: the client sees a broken transfer, never a complete unscanned file.
fn verified_stream(
    resp: reqwest::Response,
    digest: Digest,
    limit: u64,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    struct St<S> {
        inner: S,
        pending: Option<Bytes>,
        hasher: Option<Sha256>,
        total: u64,
    }
    let st = St {
        inner: Box::pin(resp.bytes_stream()),
        pending: None,
        hasher: Some(Sha256::new()),
        total: 0,
    };
    futures_util::stream::unfold(st, move |mut st| async move {
        loop {
            let hasher = st.hasher.as_mut()?;
            match st.inner.next().await {
                Some(Ok(chunk)) => {
                    st.total += chunk.len() as u64;
                    if st.total > limit {
                        st.hasher = None;
                        return Some((
                            Err(std::io::Error::other("media grew past the scan limit")),
                            st,
                        ));
                    }
                    hasher.update(&chunk);
                    if let Some(prev) = st.pending.replace(chunk) {
                        return Some((Ok(prev), st));
                    }
                }
                Some(Err(e)) => {
                    st.hasher = None;
                    return Some((Err(std::io::Error::other(e)), st));
                }
                None => {
                    let d: Digest = st.hasher.take()?.finalize().into();
                    if d != digest {
                        eprintln!(
                            "content-scanner: media changed between scan and delivery: cut off"
                        );
                        return Some((
                            Err(std::io::Error::other("media changed after it was scanned")),
                            st,
                        ));
                    }
                    return st.pending.take().map(|last| (Ok(last), st));
                }
            }
        }
    })
}

async fn refetch(s: &Scanner, job: &Job) -> Result<reqwest::Response, Response> {
    match s.upstream.get(&job.path_and_query, &job.headers).await {
        Ok(r) if r.status() == reqwest::StatusCode::OK => Ok(r),
        Ok(r) => Err(upstream_refusal(job.style, r).await),
        Err(e) => {
            s.metrics.upstream_errors.fetch_add(1, Relaxed);
            Err(request_failed(&e))
        }
    }
}

async fn streamed(s: &Scanner, job: Job, resp: reqwest::Response) -> Response {
    // A verdict for this key lets the first pass only hash; clamd runs when the hash differs.
    let cached = s.cache.digest_of(&job.cache_key);
    let (digest, verdict) = match stream_pass(s, &job, resp, cached.is_some(), None).await {
        Pass::Refused(r) => return r,
        Pass::Done(d, Some(v)) => {
            s.metrics.cache_misses.fetch_add(1, Relaxed);
            (d, v)
        }
        Pass::Done(d, None) => match cached {
            Some((cd, v)) if cd == d => {
                s.metrics.cache_hits.fetch_add(1, Relaxed);
                (d, v)
            }
            _ => {
                let again = match refetch(s, &job).await {
                    Ok(r) => r,
                    Err(r) => return r,
                };
                s.metrics.cache_misses.fetch_add(1, Relaxed);
                match stream_pass(s, &job, again, false, None).await {
                    Pass::Refused(r) => return r,
                    Pass::Done(d, v) => (d, v.expect("a scanning pass has a verdict")),
                }
            }
        },
    };
    count(&s.metrics, &verdict);
    if job.mode == Mode::Report || verdict != Verdict::Clean {
        return deliver(job.mode, verdict, HeaderMap::new(), Body::empty(), None);
    }
    // Second pass: stream to the client, checking the bytes are the ones scanned.
    let resp = match refetch(s, &job).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let headers = copy_headers(resp.headers());
    let length = resp.content_length();
    let body = verified_stream(resp, digest, s.cfg.max_file_bytes);
    deliver(
        Mode::Serve,
        Verdict::Clean,
        headers,
        Body::from_stream(body),
        length,
    )
}

// ---------------------------------------------------------------- handlers

fn forwarded(h: &HeaderMap) -> HeaderMap {
    h.clone()
}

async fn transparent(State(s): State<Shared>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let is_media = [
        "/_matrix/client/v1/media/download/",
        "/_matrix/client/v1/media/thumbnail/",
        "/_matrix/media/v3/download/",
        "/_matrix/media/v3/thumbnail/",
        "/_matrix/media/r0/download/",
        "/_matrix/media/r0/thumbnail/",
        "/_matrix/federation/v1/media/download/",
        "/_matrix/federation/v1/media/thumbnail/",
    ]
    .iter()
    .any(|p| path.starts_with(p));
    if !is_media || !(req.method() == Method::GET || req.method() == Method::HEAD) {
        return unrecognized();
    }
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or(path.clone());
    // Download variants of one media share a verdict; thumbnails differ by their parameters.
    let key = media_key(&path, req.uri().query());
    let job = Job {
        path_and_query: pq,
        cache_key: key,
        headers: forwarded(req.headers()),
        encrypted: None,
        mode: Mode::Serve,
        style: Style::Transparent,
    };
    let t = Instant::now();
    let r = run(&s, job).await;
    eprintln!(
        "content-scanner: GET {path} -> {} ({} ms)",
        r.status().as_u16(),
        t.elapsed().as_millis()
    );
    r
}

/// `download:server/media` or `thumbnail:server/media?params`, whatever the API version.
fn media_key(path: &str, query: Option<&str>) -> String {
    let rest = path
        .split_once("/download/")
        .map(|(_, r)| ("download", r))
        .or_else(|| {
            path.split_once("/thumbnail/")
                .map(|(_, r)| ("thumbnail", r))
        });
    match rest {
        Some(("download", r)) => {
            // /download/server/media[/filename]: the file name does not change the bytes.
            let mut parts = r.splitn(3, '/');
            format!(
                "download:{}/{}",
                parts.next().unwrap_or(""),
                parts.next().unwrap_or("")
            )
        }
        Some((_, r)) => format!("thumbnail:{r}?{}", query.unwrap_or("")),
        None => format!("other:{path}?{}", query.unwrap_or("")),
    }
}

fn mcs_upstream(op: &str, media_path: &str, query: Option<&str>, authed: bool) -> String {
    let kind = if op == "thumbnail" {
        "thumbnail"
    } else {
        "download"
    };
    let base = if authed {
        format!("/_matrix/client/v1/media/{kind}/{media_path}")
    } else {
        format!("/_matrix/media/v3/{kind}/{media_path}")
    };
    match (kind, query) {
        ("thumbnail", Some(q)) => format!("{base}?{q}"),
        _ => base,
    }
}

async fn mcs_get(
    State(s): State<Shared>,
    Path((op, server, media)): Path<(String, String, String)>,
    req: Request,
) -> Response {
    let mode = match op.as_str() {
        "download" | "thumbnail" => Mode::Serve,
        "scan" => Mode::Report,
        _ => return unrecognized(),
    };
    let media_path = format!("{server}/{media}");
    let query = if op == "thumbnail" {
        req.uri().query()
    } else {
        None
    };
    let authed = req.headers().contains_key(header::AUTHORIZATION);
    let job = Job {
        path_and_query: mcs_upstream(&op, &media_path, query, authed),
        cache_key: if op == "thumbnail" {
            format!("thumbnail:{media_path}?{}", query.unwrap_or(""))
        } else {
            format!("download:{media_path}")
        },
        headers: forwarded(req.headers()),
        encrypted: None,
        mode,
        style: Style::Mcs,
    };
    run(&s, job).await
}

async fn mcs_post(
    State(s): State<Shared>,
    Path(op): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mode = match op.as_str() {
        "download_encrypted" => Mode::Serve,
        "scan_encrypted" => Mode::Report,
        _ => return unrecognized(),
    };
    let file = match crypto::metadata_from_body(&body, &s.key) {
        Ok(f) => f,
        Err((reason, info)) => return error(StatusCode::BAD_REQUEST, reason, "M_BAD_JSON", &info),
    };
    let authed = headers.contains_key(header::AUTHORIZATION);
    let job = Job {
        path_and_query: mcs_upstream("download", &file.media_path, None, authed),
        cache_key: format!("encrypted:{}:{}", file.media_path, file.cache_tag),
        headers: forwarded(&headers),
        encrypted: Some(file),
        mode,
        style: Style::Mcs,
    };
    run(&s, job).await
}

async fn public_key(State(s): State<Shared>) -> Response {
    Json(json!({"public_key": s.key.public_key()})).into_response()
}

/// Upload scans for the Synapse module: the request body streams straight into clamd.
async fn upload_scan(State(s): State<Shared>, req: Request) -> Response {
    s.metrics.requests.fetch_add(1, Relaxed);
    let limit = s.cfg.max_file_bytes;
    let mut scan = match s.clamd.start().await {
        Ok(sc) => sc,
        Err(e) => {
            s.metrics.clamd_errors.fetch_add(1, Relaxed);
            s.metrics.scan_errors.fetch_add(1, Relaxed);
            return scan_failed(&e);
        }
    };
    let t = Instant::now();
    let mut total = 0u64;
    let mut stream = req.into_body().into_data_stream();
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else {
            return error(
                StatusCode::BAD_REQUEST,
                "M_UNKNOWN",
                "M_UNKNOWN",
                "upload body ended early",
            );
        };
        total += chunk.len() as u64;
        if total > limit {
            drop(scan);
            let v = Verdict::TooLarge { limit };
            count(&s.metrics, &v);
            let drained = drain(&mut stream, drain_limit(limit)).await;
            let mut r = Json(json!({"clean": false, "verdict": "too_large", "info": format!("larger than the scan limit of {limit} bytes")})).into_response();
            if !drained {
                r.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            return r;
        }
        if let Err(e) = scan.send(&chunk).await {
            s.metrics.clamd_errors.fetch_add(1, Relaxed);
            s.metrics.scan_errors.fetch_add(1, Relaxed);
            return scan_failed(&e);
        }
    }
    match scan.finish().await {
        Ok(v) => {
            s.metrics.observe_scan(t.elapsed().as_secs_f64());
            s.metrics.bytes_scanned.fetch_add(total, Relaxed);
            count(&s.metrics, &v);
            let (verdict, info) = match &v {
                Verdict::Clean => ("clean", "File is clean".to_string()),
                Verdict::Infected(name) => {
                    eprintln!("content-scanner: upload refused ({name})");
                    ("infected", name.clone())
                }
                Verdict::TooLarge { limit } => ("too_large", format!("larger than {limit} bytes")),
            };
            Json(json!({"clean": v == Verdict::Clean, "verdict": verdict, "info": info}))
                .into_response()
        }
        Err(e) => {
            s.metrics.clamd_errors.fetch_add(1, Relaxed);
            s.metrics.scan_errors.fetch_add(1, Relaxed);
            scan_failed(&e)
        }
    }
}

/// How much of an over-limit upload is read and discarded before answering.
fn drain_limit(limit: u64) -> u64 {
    limit.saturating_mul(4).max(256 << 20)
}

/// How long an over-limit upload may take to be read and discarded.
const DRAIN_TIME: Duration = Duration::from_secs(60);

/// Reads and discards the rest of a request body, so that a client still sending it gets the
/// answer: hyper closes a connection whose request body was left unread, and the sender then
/// fails with a broken pipe or a reset instead of reading `too_large`. Bounded by `max` bytes
/// and [`DRAIN_TIME`]; false when the body was longer (the connection is then closed).
async fn drain(
    stream: &mut (impl futures_util::Stream<Item = Result<Bytes, axum::Error>> + Unpin),
    max: u64,
) -> bool {
    let mut read = 0u64;
    let all = async {
        while let Some(chunk) = stream.next().await {
            let Ok(chunk) = chunk else { return false };
            read += chunk.len() as u64;
            if read > max {
                return false;
            }
        }
        true
    };
    tokio::time::timeout(DRAIN_TIME, all).await.unwrap_or(false)
}

async fn ready(State(s): State<Shared>) -> Response {
    match s.clamd.ping().await {
        Ok(()) => Json(json!({"status": "ok", "clamd": "ok"})).into_response(),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "MCS_SCAN_UNAVAILABLE",
            "M_UNKNOWN",
            &e.to_string(),
        ),
    }
}

async fn metrics(State(s): State<Shared>) -> Response {
    // Bounded well below a scrape timeout: a hung clamd reads as down, not as a failed scrape.
    let clamd_up = tokio::time::timeout(std::time::Duration::from_secs(2), s.clamd.ping())
        .await
        .is_ok_and(|r| r.is_ok());
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(s.cache.len(), clamd_up),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_keys_ignore_api_version_and_file_name() {
        assert_eq!(
            media_key("/_matrix/client/v1/media/download/d/abc/cat.png", None),
            media_key("/_matrix/media/v3/download/d/abc", None)
        );
        assert_ne!(
            media_key("/_matrix/client/v1/media/thumbnail/d/abc", Some("width=32")),
            media_key("/_matrix/client/v1/media/thumbnail/d/abc", Some("width=64"))
        );
    }
}
