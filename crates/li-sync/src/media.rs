//! The LI media copy: every object of the main media bucket is copied to the LI bucket, verified,
//! and recorded in a ledger in the LI database. Nothing is ever deleted, on either side: an object
//! deleted on main keeps its LI copy and its ledger row, and an object rewritten in place on main is
//! copied to a new LI key (`<key>.li-version-<n>`) so the first copy is never overwritten.
//!
//! # How a pass works
//!
//! [`MediaSync::sync_once`] lists the main bucket page by page (ListObjectsV2, 1000 keys a page). For
//! each page it looks the keys up in the ledger and copies every object that is new, or whose size
//! or ETag differs from the ledger's (rewritten in place), a few at a time ([`MediaSync::with_concurrency`]):
//!
//! 1. pick the LI key: the main key for a first copy, `<key>.li-version-<n>` for a later one; a key
//!    already present in the LI bucket (HEAD) is never reused, the next version number is taken;
//! 2. GET the object from main and stream it, as it arrives, into a PUT to the LI bucket, hashing
//!    (SHA-256) and counting the bytes on the way; the PUT also carries `If-None-Match: *`;
//! 3. read the LI copy back (GET, streamed, hashed) and compare its size and SHA-256 with what was
//!    read from main;
//! 4. only then record it in `mxstack_li.media_objects` (one row per main key, the latest copy) and
//!    `mxstack_li.media_object_versions` (every copy ever made, append-only).
//!
//! **Memory is bounded for any object size: nothing is buffered whole**, objects are streamed in
//! both directions (at most a few HTTP chunks per copy in flight), and the listing is processed a
//! page at a time, so a bucket of millions of keys is never held in memory either.
//!
//! An object that fails (unreadable, unwritable, verification mismatch, vanished from main before
//! it could be copied) is counted in `errors` and in `backlog`, left out of the ledger, and the pass
//! goes on; the next pass retries it. Each pass is recorded in `mxstack_li.media_sync_runs`: the row
//! is inserted when the pass starts, updated after each page, and gets `finished_at` at the end, so
//! a pass interrupted mid-way (process killed) leaves an unfinished row; [`last_run`] reports the
//! latest *finished* pass.
//!
//! # Credentials
//!
//! Requests are presigned (AWS SigV4 query signatures, rusty-s3); the signed URLs never leave this
//! module: [`MediaError`] carries the operation, bucket, object key and the S3 error code and
//! message, never a URL, a signature, the access key or the secret.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, IF_NONE_MATCH};
use rusty_s3::actions::ListObjectsV2;
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use sha2::{Digest, Sha256};

/// Copies in flight at once, by default.
pub const DEFAULT_CONCURRENCY: usize = 4;
/// How long a presigned URL stays valid (S3 checks it when a request starts, so a long transfer
/// is not cut off by it).
const PRESIGN_TTL: Duration = Duration::from_secs(3600);
/// Keys per ListObjectsV2 page.
const PAGE_SIZE: usize = 1000;
/// Version numbers tried when the LI keys are already taken, before giving up on an object.
const MAX_VERSION_PROBES: u32 = 100;
/// At most this much of an S3 error body is read (error documents are small).
const MAX_ERROR_BODY: usize = 16 * 1024;

#[derive(Debug)]
pub enum MediaError {
    /// Bad configuration (endpoint, bucket name).
    Config(String),
    /// An S3 request failed: which operation, on what, and S3's error code/message or the
    /// transport error. Never a URL or a credential.
    S3 {
        op: &'static str,
        bucket: String,
        key: Option<String>,
        detail: String,
    },
    /// The LI copy read back does not match what was read from main.
    Verify { key: String, detail: String },
    /// The ledger (LI database).
    Db(String),
}

impl std::fmt::Display for MediaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MediaError::Config(m) => write!(f, "media config: {m}"),
            MediaError::S3 {
                op,
                bucket,
                key: Some(key),
                detail,
            } => write!(f, "S3 {op} {bucket}/{key}: {detail}"),
            MediaError::S3 {
                op,
                bucket,
                key: None,
                detail,
            } => write!(f, "S3 {op} {bucket}: {detail}"),
            MediaError::Verify { key, detail } => write!(f, "verifying LI copy of {key}: {detail}"),
            MediaError::Db(m) => write!(f, "media ledger: {m}"),
        }
    }
}

impl std::error::Error for MediaError {}

impl From<tokio_postgres::Error> for MediaError {
    fn from(e: tokio_postgres::Error) -> Self {
        MediaError::Db(match e.as_db_error() {
            Some(db) => format!("{}: {}", db.code().code(), db.message()),
            None => e.to_string(),
        })
    }
}

/// One pass, as returned by [`MediaSync::sync_once`] and [`last_run`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct MediaSyncReport {
    /// Objects listed on main.
    pub listed: u64,
    /// Objects copied and verified in this pass.
    pub copied: u64,
    /// Bytes copied in this pass.
    pub bytes: u64,
    /// Objects on main that are not (or not in their current version) in the LI bucket at the end
    /// of the pass: the failed ones and those left for the next pass.
    pub backlog: u64,
    /// Objects that failed in this pass (plus 1 if the listing itself failed).
    pub errors: u64,
    pub finished_at_unix: f64,
    /// The first error of the pass, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The copier. Holds an HTTP client, the two buckets and the credentials (its `Debug` shows
/// neither key).
pub struct MediaSync {
    http: reqwest::Client,
    main: Bucket,
    li: Bucket,
    credentials: Credentials,
    concurrency: usize,
    max_copies_per_pass: Option<u64>,
    page_size: usize,
}

impl std::fmt::Debug for MediaSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaSync")
            .field(
                "endpoint",
                &self.main.base_url().origin().ascii_serialization(),
            )
            .field("main_bucket", &self.main.name())
            .field("li_bucket", &self.li.name())
            .field("concurrency", &self.concurrency)
            .field("max_copies_per_pass", &self.max_copies_per_pass)
            .finish_non_exhaustive()
    }
}

/// One object as the main listing shows it.
#[derive(Debug, Clone)]
struct Listed {
    key: String,
    size: u64,
    etag: String,
}

/// The ledger's latest copy of a main key.
#[derive(Debug, Clone)]
struct LedgerRow {
    size: i64,
    etag: String,
    version: i32,
}

/// A verified copy.
struct Copied {
    bytes: u64,
}

/// Byte count and SHA-256 of a stream, filled in as it passes.
#[derive(Default)]
struct Digesting {
    hasher: Sha256,
    bytes: u64,
}

impl MediaSync {
    /// A copier for `cfg`'s buckets with the given credentials (read from the environment by the
    /// caller, see [`crate::config::MediaConfig::credentials`]). The endpoint must be `http://`:
    /// li-sync is built without TLS and talks to the in-cluster S3 service.
    pub fn new(
        cfg: &crate::config::MediaConfig,
        access_key: String,
        secret_key: String,
    ) -> Result<MediaSync, MediaError> {
        let endpoint: url::Url = cfg
            .endpoint
            .parse()
            .map_err(|e| MediaError::Config(format!("endpoint is not a URL: {e}")))?;
        if endpoint.scheme() != "http" {
            return Err(MediaError::Config(format!(
                "endpoint scheme {:?}: only http:// is supported (li-sync reaches S3 inside the cluster and is built without TLS)",
                endpoint.scheme()
            )));
        }
        if !endpoint.username().is_empty() || endpoint.password().is_some() {
            return Err(MediaError::Config(
                "endpoint must not carry credentials; use access_key_env/secret_key_env".into(),
            ));
        }
        if cfg.main_bucket == cfg.li_bucket {
            return Err(MediaError::Config(format!(
                "main_bucket and li_bucket are both {:?}",
                cfg.main_bucket
            )));
        }
        let bucket = |name: &str| {
            Bucket::new(
                endpoint.clone(),
                UrlStyle::Path,
                name.to_string(),
                cfg.region.clone(),
            )
            .map_err(|e| MediaError::Config(format!("bucket {name:?}: {e}")))
        };
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            // Per read, not per request: a large object may take long, a stalled one may not.
            .read_timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| MediaError::Config(format!("HTTP client: {}", transport(e))))?;
        Ok(MediaSync {
            http,
            main: bucket(&cfg.main_bucket)?,
            li: bucket(&cfg.li_bucket)?,
            credentials: Credentials::new(access_key, secret_key),
            concurrency: DEFAULT_CONCURRENCY,
            max_copies_per_pass: None,
            page_size: PAGE_SIZE,
        })
    }

    /// Copies in flight at once (at least 1; default [`DEFAULT_CONCURRENCY`]).
    pub fn with_concurrency(mut self, n: usize) -> MediaSync {
        self.concurrency = n.max(1);
        self
    }

    /// Keys per listing page (1..=1000; default 1000). Also bounds the copies queued at once.
    pub fn with_page_size(mut self, n: usize) -> MediaSync {
        self.page_size = n.clamp(1, PAGE_SIZE);
        self
    }

    /// Stop copying after `n` objects in one pass (the rest of the bucket is still listed and
    /// counted in `backlog`), so that a large initial backlog is worked off in passes that each
    /// report progress. Default: no limit.
    pub fn with_max_copies_per_pass(mut self, n: u64) -> MediaSync {
        self.max_copies_per_pass = Some(n);
        self
    }

    /// Creates (IF NOT EXISTS) schema `mxstack_li` and the ledger tables in the LI database:
    /// `media_objects` (one row per main key: its latest verified LI copy), `media_object_versions`
    /// (every verified copy, never updated) and `media_sync_runs` (one row per pass).
    pub async fn ensure_ledger(db: &tokio_postgres::Client) -> Result<(), MediaError> {
        db.batch_execute(
            "CREATE SCHEMA IF NOT EXISTS mxstack_li;
             CREATE TABLE IF NOT EXISTS mxstack_li.media_objects (
                 key text PRIMARY KEY,
                 size bigint NOT NULL,
                 sha256 text NOT NULL,
                 etag text NOT NULL,
                 copied_at timestamptz NOT NULL DEFAULT now(),
                 li_key text NOT NULL,
                 version integer NOT NULL DEFAULT 0
             );
             CREATE TABLE IF NOT EXISTS mxstack_li.media_object_versions (
                 key text NOT NULL,
                 version integer NOT NULL,
                 size bigint NOT NULL,
                 sha256 text NOT NULL,
                 etag text NOT NULL,
                 copied_at timestamptz NOT NULL DEFAULT now(),
                 li_key text NOT NULL UNIQUE,
                 PRIMARY KEY (key, version)
             );
             CREATE TABLE IF NOT EXISTS mxstack_li.media_sync_runs (
                 id bigserial PRIMARY KEY,
                 started_at timestamptz NOT NULL DEFAULT now(),
                 finished_at timestamptz,
                 listed bigint NOT NULL DEFAULT 0,
                 copied bigint NOT NULL DEFAULT 0,
                 bytes bigint NOT NULL DEFAULT 0,
                 backlog bigint NOT NULL DEFAULT 0,
                 errors bigint NOT NULL DEFAULT 0,
                 error text
             );
             CREATE INDEX IF NOT EXISTS media_sync_runs_finished_at
                 ON mxstack_li.media_sync_runs (finished_at);",
        )
        .await?;
        Ok(())
    }

    /// One incremental pass (see the module documentation). Per-object failures are counted in
    /// the report, not returned; an `Err` means the pass itself could not go on (the listing or
    /// the ledger failed), and is recorded in the run's row when the ledger is reachable.
    pub async fn sync_once(
        &self,
        db: &tokio_postgres::Client,
    ) -> Result<MediaSyncReport, MediaError> {
        let run_id: i64 = db
            .query_one(
                "INSERT INTO mxstack_li.media_sync_runs DEFAULT VALUES RETURNING id",
                &[],
            )
            .await?
            .get(0);
        let mut report = MediaSyncReport {
            listed: 0,
            copied: 0,
            bytes: 0,
            backlog: 0,
            errors: 0,
            finished_at_unix: 0.0,
            error: None,
        };
        let outcome = self.pass(db, run_id, &mut report).await;
        if let Err(e) = &outcome {
            report.errors += 1;
            report.error.get_or_insert_with(|| e.to_string());
        }
        let finished = db
            .query_one(
                "UPDATE mxstack_li.media_sync_runs
                    SET finished_at = now(), listed = $2, copied = $3, bytes = $4, backlog = $5,
                        errors = $6, error = $7
                  WHERE id = $1
              RETURNING extract(epoch FROM finished_at)::float8",
                &[
                    &run_id,
                    &to_i64(report.listed),
                    &to_i64(report.copied),
                    &to_i64(report.bytes),
                    &to_i64(report.backlog),
                    &to_i64(report.errors),
                    &report.error,
                ],
            )
            .await;
        outcome?;
        report.finished_at_unix = finished?.get(0);
        Ok(report)
    }

    async fn pass(
        &self,
        db: &tokio_postgres::Client,
        run_id: i64,
        report: &mut MediaSyncReport,
    ) -> Result<(), MediaError> {
        let mut token: Option<String> = None;
        loop {
            let (page, next) = self.list_page(token.as_deref()).await?;
            report.listed += page.len() as u64;
            let ledger = ledger_rows(db, &page).await?;
            let mut todo = Vec::new();
            for obj in page {
                let prior = ledger.get(&obj.key).cloned();
                let current = prior.as_ref().is_some_and(|p| {
                    u64::try_from(p.size).ok() == Some(obj.size) && p.etag == obj.etag
                });
                if current {
                    continue;
                }
                let budget_left = self
                    .max_copies_per_pass
                    .is_none_or(|max| report.copied + report.errors + (todo.len() as u64) < max);
                if budget_left {
                    todo.push((obj, prior));
                } else {
                    report.backlog += 1;
                }
            }
            let mut copies =
                futures_util::stream::iter(todo.into_iter().map(|(obj, prior)| async move {
                    self.copy_one(db, &obj, prior.as_ref()).await
                }))
                .buffer_unordered(self.concurrency);
            while let Some(r) = copies.next().await {
                match r {
                    Ok(c) => {
                        report.copied += 1;
                        report.bytes += c.bytes;
                    }
                    Err(e) => {
                        report.errors += 1;
                        report.backlog += 1;
                        report.error.get_or_insert_with(|| e.to_string());
                    }
                }
            }
            drop(copies);
            db.execute(
                "UPDATE mxstack_li.media_sync_runs
                    SET listed = $2, copied = $3, bytes = $4, backlog = $5, errors = $6, error = $7
                  WHERE id = $1",
                &[
                    &run_id,
                    &to_i64(report.listed),
                    &to_i64(report.copied),
                    &to_i64(report.bytes),
                    &to_i64(report.backlog),
                    &to_i64(report.errors),
                    &report.error,
                ],
            )
            .await?;
            match next {
                Some(t) => token = Some(t),
                None => return Ok(()),
            }
        }
    }

    /// One page of the main bucket's listing and the continuation token of the next.
    async fn list_page(
        &self,
        token: Option<&str>,
    ) -> Result<(Vec<Listed>, Option<String>), MediaError> {
        let err = |detail: String| MediaError::S3 {
            op: "ListObjectsV2",
            bucket: self.main.name().to_string(),
            key: None,
            detail,
        };
        let mut action = ListObjectsV2::new(&self.main, Some(&self.credentials));
        // Keys come back as they are (XML-escaped), not percent-encoded.
        action.query_mut().remove("encoding-type");
        action.with_max_keys(self.page_size);
        if let Some(t) = token {
            action.with_continuation_token(t);
        }
        let resp = self
            .http
            .get(action.sign(PRESIGN_TTL))
            .send()
            .await
            .map_err(|e| err(transport(e)))?;
        if !resp.status().is_success() {
            return Err(err(s3_error_detail(resp).await));
        }
        let body = resp.bytes().await.map_err(|e| err(transport(e)))?;
        let parsed = ListObjectsV2::parse_response(&body)
            .map_err(|e| err(format!("unreadable listing: {e}")))?;
        let page = parsed
            .contents
            .into_iter()
            // "Directory" markers some servers list are not media.
            .filter(|c| !(c.key.ends_with('/') && c.size == 0))
            .map(|c| Listed {
                etag: normalize_etag(&c.etag),
                key: c.key,
                size: c.size,
            })
            .collect();
        Ok((page, parsed.next_continuation_token))
    }

    /// Copy, verify and record one object.
    async fn copy_one(
        &self,
        db: &tokio_postgres::Client,
        obj: &Listed,
        prior: Option<&LedgerRow>,
    ) -> Result<Copied, MediaError> {
        // 1. An LI key nothing was ever written to.
        let mut version: u32 = prior.map_or(0, |p| u32::try_from(p.version).unwrap_or(0) + 1);
        let mut probes = 0;
        let li_key = loop {
            let candidate = li_key_for(&obj.key, version);
            if !self.li_exists(&candidate).await? {
                break candidate;
            }
            probes += 1;
            if probes >= MAX_VERSION_PROBES {
                return Err(MediaError::S3 {
                    op: "HeadObject",
                    bucket: self.li.name().to_string(),
                    key: Some(obj.key.clone()),
                    detail: format!("{MAX_VERSION_PROBES} LI version keys are already taken"),
                });
            }
            version += 1;
        };

        // 2. Stream main -> LI, hashing what is read from main.
        let get_err = |detail: String| MediaError::S3 {
            op: "GetObject",
            bucket: self.main.name().to_string(),
            key: Some(obj.key.clone()),
            detail,
        };
        let url = self
            .main
            .get_object(Some(&self.credentials), &obj.key)
            .sign(PRESIGN_TTL);
        let resp = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| get_err(transport(e)))?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Err(get_err(
                "the object vanished from main before it could be copied".into(),
            ));
        }
        if !resp.status().is_success() {
            return Err(get_err(s3_error_detail(resp).await));
        }
        let length = resp.content_length().unwrap_or(obj.size);
        let content_type = resp.headers().get(CONTENT_TYPE).cloned();
        let from_main = Arc::new(Mutex::new(Digesting::default()));
        let tap = Arc::clone(&from_main);
        let body = resp.bytes_stream().map(move |chunk| {
            if let Ok(bytes) = &chunk {
                let mut d = tap.lock().unwrap_or_else(|p| p.into_inner());
                d.hasher.update(bytes);
                d.bytes += bytes.len() as u64;
            }
            chunk
        });
        let put_err = |detail: String| MediaError::S3 {
            op: "PutObject",
            bucket: self.li.name().to_string(),
            key: Some(li_key.clone()),
            detail,
        };
        let url = self
            .li
            .put_object(Some(&self.credentials), &li_key)
            .sign(PRESIGN_TTL);
        let mut put = self
            .http
            .put(url)
            .header(CONTENT_LENGTH, length)
            // Refused by servers that support conditional writes if the key appeared meanwhile.
            .header(IF_NONE_MATCH, HeaderValue::from_static("*"))
            .body(reqwest::Body::wrap_stream(body));
        if let Some(ct) = content_type {
            put = put.header(CONTENT_TYPE, ct);
        }
        let resp = put.send().await.map_err(|e| put_err(transport(e)))?;
        if !resp.status().is_success() {
            return Err(put_err(s3_error_detail(resp).await));
        }
        let (main_sha, main_bytes) = {
            let mut d = from_main.lock().unwrap_or_else(|p| p.into_inner());
            let d = std::mem::take(&mut *d);
            (hex::encode(d.hasher.finalize()), d.bytes)
        };
        if main_bytes != length {
            return Err(get_err(format!(
                "read {main_bytes} bytes, Content-Length said {length}"
            )));
        }

        // 3. Read the LI copy back.
        let (li_sha, li_bytes) = self.li_digest(&li_key).await?;
        if li_bytes != main_bytes || li_sha != main_sha {
            return Err(MediaError::Verify {
                key: obj.key.clone(),
                detail: format!(
                    "LI copy {li_key} has {li_bytes} bytes sha256 {li_sha}, main had {main_bytes} bytes sha256 {main_sha}"
                ),
            });
        }

        // 4. Record it.
        db.execute(
            "WITH v AS (
                 INSERT INTO mxstack_li.media_object_versions (key, version, size, sha256, etag, li_key)
                 VALUES ($1, $2, $3, $4, $5, $6)
             )
             INSERT INTO mxstack_li.media_objects (key, version, size, sha256, etag, li_key)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (key) DO UPDATE
                SET version = EXCLUDED.version, size = EXCLUDED.size, sha256 = EXCLUDED.sha256,
                    etag = EXCLUDED.etag, li_key = EXCLUDED.li_key, copied_at = now()",
            &[
                &obj.key,
                &i32::try_from(version).unwrap_or(i32::MAX),
                &to_i64(main_bytes),
                &main_sha,
                // The listing's ETag, the one the next pass compares with (a GET may format it
                // differently on some servers; if the object changed between the listing and
                // the GET, the next pass merely keeps one more version).
                &obj.etag,
                &li_key,
            ],
        )
        .await?;
        Ok(Copied { bytes: main_bytes })
    }

    /// Whether `key` exists in the LI bucket.
    async fn li_exists(&self, key: &str) -> Result<bool, MediaError> {
        let err = |detail: String| MediaError::S3 {
            op: "HeadObject",
            bucket: self.li.name().to_string(),
            key: Some(key.to_string()),
            detail,
        };
        let url = self
            .li
            .head_object(Some(&self.credentials), key)
            .sign(PRESIGN_TTL);
        let resp = self
            .http
            .head(url)
            .send()
            .await
            .map_err(|e| err(transport(e)))?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            reqwest::StatusCode::NOT_FOUND => Ok(false),
            s => Err(err(format!("HTTP {}", s.as_u16()))),
        }
    }

    /// Size and SHA-256 of an LI object, streamed.
    async fn li_digest(&self, key: &str) -> Result<(String, u64), MediaError> {
        let err = |detail: String| MediaError::Verify {
            key: key.to_string(),
            detail,
        };
        let url = self
            .li
            .get_object(Some(&self.credentials), key)
            .sign(PRESIGN_TTL);
        let mut resp = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| err(format!("reading it back: {}", transport(e))))?;
        if !resp.status().is_success() {
            return Err(err(format!(
                "reading it back: {}",
                s3_error_detail(resp).await
            )));
        }
        let mut hasher = Sha256::new();
        let mut bytes = 0u64;
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| err(format!("reading it back: {}", transport(e))))?
        {
            hasher.update(&chunk);
            bytes += chunk.len() as u64;
        }
        Ok((hex::encode(hasher.finalize()), bytes))
    }
}

/// The latest finished pass from the ledger, for status (None if none finished yet, or the ledger
/// does not exist).
pub async fn last_run(db: &tokio_postgres::Client) -> Result<Option<MediaSyncReport>, MediaError> {
    let exists: bool = db
        .query_one(
            "SELECT to_regclass('mxstack_li.media_sync_runs') IS NOT NULL",
            &[],
        )
        .await?
        .get(0);
    if !exists {
        return Ok(None);
    }
    let row = db
        .query_opt(
            "SELECT listed, copied, bytes, backlog, errors,
                    extract(epoch FROM finished_at)::float8, error
               FROM mxstack_li.media_sync_runs
              WHERE finished_at IS NOT NULL
           ORDER BY finished_at DESC, id DESC
              LIMIT 1",
            &[],
        )
        .await?;
    Ok(row.map(|r| {
        let n = |i: usize| u64::try_from(r.get::<_, i64>(i)).unwrap_or(0);
        MediaSyncReport {
            listed: n(0),
            copied: n(1),
            bytes: n(2),
            backlog: n(3),
            errors: n(4),
            finished_at_unix: r.get(5),
            error: r.get(6),
        }
    }))
}

/// The LI key of version `n` of a main key: the key itself for the first copy.
pub fn li_key_for(key: &str, n: u32) -> String {
    if n == 0 {
        key.to_string()
    } else {
        format!("{key}.li-version-{n}")
    }
}

async fn ledger_rows(
    db: &tokio_postgres::Client,
    page: &[Listed],
) -> Result<std::collections::HashMap<String, LedgerRow>, MediaError> {
    if page.is_empty() {
        return Ok(Default::default());
    }
    let keys: Vec<&str> = page.iter().map(|o| o.key.as_str()).collect();
    let rows = db
        .query(
            "SELECT key, size, etag, version FROM mxstack_li.media_objects WHERE key = ANY($1)",
            &[&keys],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                r.get::<_, String>(0),
                LedgerRow {
                    size: r.get(1),
                    etag: r.get(2),
                    version: r.get(3),
                },
            )
        })
        .collect())
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// ETags as S3 sends them are quoted (sometimes weak, `W/"…"`); the ledger keeps the bare value.
fn normalize_etag(etag: &str) -> String {
    etag.trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .to_string()
}

/// A transport error without its URL (a presigned URL carries the signature) and with its causes.
fn transport(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut out = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// `HTTP <status> <Code>: <Message>` from an S3 error response. Only the code and message are
/// kept: some servers echo the canonical request or string-to-sign in other fields.
async fn s3_error_detail(mut resp: reqwest::Response) -> String {
    let status = resp.status().as_u16();
    let mut body = Vec::new();
    while body.len() < MAX_ERROR_BODY {
        match resp.chunk().await {
            Ok(Some(c)) => body.extend_from_slice(&c),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&body);
    let field = |name: &str| {
        let open = format!("<{name}>");
        let close = format!("</{name}>");
        let start = text.find(&open)? + open.len();
        let len = text[start..].find(&close)?;
        Some(
            text[start..start + len]
                .chars()
                .take(300)
                .collect::<String>(),
        )
    };
    match (field("Code"), field("Message")) {
        (Some(c), Some(m)) => format!("HTTP {status} {c}: {m}"),
        (Some(c), None) => format!("HTTP {status} {c}"),
        _ => format!("HTTP {status}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_are_normalized() {
        assert_eq!(normalize_etag("\"abc\""), "abc");
        assert_eq!(normalize_etag("W/\"abc-2\""), "abc-2");
        assert_eq!(normalize_etag("abc"), "abc");
    }

    #[test]
    fn version_keys() {
        assert_eq!(
            li_key_for("local_content/ab/cd/ef", 0),
            "local_content/ab/cd/ef"
        );
        assert_eq!(
            li_key_for("local_content/ab/cd/ef", 2),
            "local_content/ab/cd/ef.li-version-2"
        );
    }

    fn cfg(endpoint: &str) -> crate::config::MediaConfig {
        crate::config::MediaConfig {
            endpoint: endpoint.into(),
            region: "us-east-1".into(),
            main_bucket: "media".into(),
            li_bucket: "media-li".into(),
            access_key_env: "A".into(),
            secret_key_env: "S".into(),
            interval_secs: 60,
        }
    }

    #[test]
    fn new_checks_the_config_and_debug_hides_keys() {
        let m = MediaSync::new(
            &cfg("http://127.0.0.1:8333"),
            "AKID-x".into(),
            "SECRET-y".into(),
        )
        .unwrap();
        let d = format!("{m:?}");
        assert!(!d.contains("AKID-x") && !d.contains("SECRET-y"), "{d}");
        let e = MediaSync::new(&cfg("https://s3.example"), "a".into(), "b".into()).unwrap_err();
        assert!(e.to_string().contains("only http://"), "{e}");
        let e = MediaSync::new(&cfg("http://u:pw@h:1"), "a".into(), "b".into()).unwrap_err();
        assert!(!e.to_string().contains("pw"), "{e}");
        let mut same = cfg("http://h:1");
        same.li_bucket = "media".into();
        assert!(MediaSync::new(&same, "a".into(), "b".into()).is_err());
    }
}
