//! The LI media copy against a real SeaweedFS S3 server and a real PostgreSQL ledger.
//!
//! li-sync's identity has only Read+List on the main bucket and Read+Write+List on the LI buckets;
//! the test's admin identity creates buckets and plays Synapse (writes, rewrites, deletes on main).

mod support;

use std::time::{Duration, Instant};

use mxstack_li_sync::config::MediaConfig;
use mxstack_li_sync::media::{last_run, MediaError, MediaSync, MediaSyncReport};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use sha2::{Digest, Sha256};
use support::{PgCluster, S3Identity, Seaweed};
use tokio_postgres::NoTls;

const MAIN: &str = "media";
const LI: &str = "media-li";
/// An LI bucket li-sync may write to but that does not exist until a test creates it.
const LI_LATE: &str = "media-li-late";
const ADMIN_KEY: &str = "admin-access-key";
const ADMIN_SECRET: &str = "admin-secret-key-0123456789";
const LI_KEY: &str = "li-sync-access-key";
const LI_SECRET: &str = "li-sync-secret-key-9876543210";
const TTL: Duration = Duration::from_secs(600);

struct Env {
    // Field order = drop order: the connection before the servers.
    db: tokio_postgres::Client,
    s3: Seaweed,
    _pg: PgCluster,
    http: reqwest::Client,
    admin: Credentials,
    _memory: MemoryLock,
}

/// The memory test measures this process's RSS: it runs alone, the others share.
static MEMORY: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

enum MemoryLock {
    Shared(#[allow(dead_code)] tokio::sync::RwLockReadGuard<'static, ()>),
    Exclusive(#[allow(dead_code)] tokio::sync::RwLockWriteGuard<'static, ()>),
}

impl Drop for Env {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.s3.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- weed.log (last lines) ---");
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

async fn env() -> Env {
    env_with(MemoryLock::Shared(MEMORY.read().await)).await
}

async fn env_with(memory: MemoryLock) -> Env {
    let started = Instant::now();
    let pg = PgCluster::start();
    let s3 = Seaweed::start(&[
        S3Identity {
            name: "admin",
            access_key: ADMIN_KEY.into(),
            secret_key: ADMIN_SECRET.into(),
            actions: vec!["Admin".into(), "Read".into(), "Write".into(), "List".into()],
        },
        S3Identity {
            name: "li-sync",
            access_key: LI_KEY.into(),
            secret_key: LI_SECRET.into(),
            actions: [
                format!("Read:{MAIN}"),
                format!("List:{MAIN}"),
                format!("Read:{LI}"),
                format!("Write:{LI}"),
                format!("List:{LI}"),
                format!("Read:{LI_LATE}"),
                format!("Write:{LI_LATE}"),
                format!("List:{LI_LATE}"),
            ]
            .into(),
        },
    ]);
    let (db, conn) = tokio_postgres::connect(&pg.dsn("postgres", "postgres"), NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let env = Env {
        db,
        s3,
        _pg: pg,
        http: reqwest::Client::new(),
        admin: Credentials::new(ADMIN_KEY, ADMIN_SECRET),
        _memory: memory,
    };
    env.create_bucket(MAIN).await;
    env.create_bucket(LI).await;
    MediaSync::ensure_ledger(&env.db).await.unwrap();
    eprintln!("environment ready in {:?}", started.elapsed());
    env
}

impl Env {
    fn bucket(&self, name: &str) -> Bucket {
        Bucket::new(
            self.s3.endpoint().parse().unwrap(),
            UrlStyle::Path,
            name.to_string(),
            "us-east-1",
        )
        .unwrap()
    }

    fn media_config(&self, li_bucket: &str) -> MediaConfig {
        MediaConfig {
            endpoint: self.s3.endpoint(),
            region: "us-east-1".into(),
            main_bucket: MAIN.into(),
            li_bucket: li_bucket.into(),
            access_key_env: "LI_S3_ACCESS_KEY".into(),
            secret_key_env: "LI_S3_SECRET_KEY".into(),
            interval_secs: 60,
        }
    }

    fn sync(&self, li_bucket: &str) -> MediaSync {
        MediaSync::new(
            &self.media_config(li_bucket),
            LI_KEY.into(),
            LI_SECRET.into(),
        )
        .unwrap()
    }

    /// CreateBucket as admin; retried while SeaweedFS is still starting (filer, volumes).
    async fn create_bucket(&self, name: &str) {
        let bucket = self.bucket(name);
        let start = Instant::now();
        loop {
            let url = bucket.create_bucket(&self.admin).sign(TTL);
            let last = match self.http.put(url).send().await {
                Ok(r) if r.status().is_success() => return,
                Ok(r) => format!("{} {}", r.status(), r.text().await.unwrap_or_default()),
                Err(e) => e.without_url().to_string(),
            };
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "create bucket {name}: {last}\n{}",
                self.s3.log()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// PutObject as admin (Synapse's role on main); retried while volumes are being allocated.
    async fn put(&self, bucket: &str, key: &str, data: &[u8]) {
        let b = self.bucket(bucket);
        let start = Instant::now();
        loop {
            let url = b.put_object(Some(&self.admin), key).sign(TTL);
            let last = match self.http.put(url).body(data.to_vec()).send().await {
                Ok(r) if r.status().is_success() => return,
                Ok(r) => format!("{} {}", r.status(), r.text().await.unwrap_or_default()),
                Err(e) => e.without_url().to_string(),
            };
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "put {bucket}/{key}: {last}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// GetObject as admin: None on 404.
    async fn get(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        let url = self
            .bucket(bucket)
            .get_object(Some(&self.admin), key)
            .sign(TTL);
        let r = self.http.get(url).send().await.unwrap();
        if r.status() == reqwest::StatusCode::NOT_FOUND {
            return None;
        }
        assert!(
            r.status().is_success(),
            "get {bucket}/{key}: {}",
            r.status()
        );
        Some(r.bytes().await.unwrap().to_vec())
    }

    async fn delete(&self, creds: &Credentials, bucket: &str, key: &str) -> reqwest::StatusCode {
        let url = self
            .bucket(bucket)
            .delete_object(Some(creds), key)
            .sign(TTL);
        self.http.delete(url).send().await.unwrap().status()
    }

    async fn count(&self, sql: &str) -> i64 {
        self.db.query_one(sql, &[]).await.unwrap().get(0)
    }

    /// (li_key, version, size, sha256) of a main key in the ledger.
    async fn ledger(&self, key: &str) -> Option<(String, i32, i64, String)> {
        self.db
            .query_opt(
                "SELECT li_key, version, size, sha256 FROM mxstack_li.media_objects WHERE key = $1",
                &[&key],
            )
            .await
            .unwrap()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
    }
}

/// Deterministic, incompressible-looking bytes.
fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn sha(d: &[u8]) -> String {
    hex::encode(Sha256::digest(d))
}

fn assert_report(r: &MediaSyncReport, listed: u64, copied: u64, backlog: u64, errors: u64) {
    assert_eq!(
        (r.listed, r.copied, r.backlog, r.errors),
        (listed, copied, backlog, errors),
        "(listed, copied, backlog, errors) of {r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn li_identity_cannot_delete_or_write_on_main() {
    let env = env().await;
    let key = "local_content/aa/bb/protected";
    env.put(MAIN, key, b"evidence").await;
    let li = Credentials::new(LI_KEY, LI_SECRET);

    // A real denial from SeaweedFS, and the object is still there.
    let status = env.delete(&li, MAIN, key).await;
    assert_eq!(
        status,
        reqwest::StatusCode::FORBIDDEN,
        "li-sync's DELETE on main"
    );
    assert_eq!(env.get(MAIN, key).await.as_deref(), Some(&b"evidence"[..]));
    let url = env.bucket(MAIN).put_object(Some(&li), key).sign(TTL);
    let status = env
        .http
        .put(url)
        .body("overwritten")
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(
        status,
        reqwest::StatusCode::FORBIDDEN,
        "li-sync's PUT on main"
    );
    assert_eq!(env.get(MAIN, key).await.as_deref(), Some(&b"evidence"[..]));

    // li-sync can read main and write the LI bucket: the pass copies it.
    let report = env.sync(LI).sync_once(&env.db).await.unwrap();
    assert_report(&report, 1, 1, 0, 0);
    assert_eq!(env.get(LI, key).await.as_deref(), Some(&b"evidence"[..]));

    // The same DELETE as admin succeeds: the denial above is about li-sync's permissions.
    assert!(env.delete(&env.admin, MAIN, key).await.is_success());
    assert_eq!(env.get(MAIN, key).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_every_size_byte_identical_and_incrementally() {
    let env = env().await;
    let objects: Vec<(String, Vec<u8>)> = vec![
        ("local_content/00/00/empty".into(), Vec::new()),
        ("local_content/ab/cd/small".into(), data(1234, 1)),
        ("local_content/ab/ce/one-mib".into(), data(1 << 20, 2)),
        (
            "local_content/ef/01/large".into(),
            data(9 * 1024 * 1024 + 321, 3),
        ),
        (
            "local_thumbnails/ab/cd/small/32-32-image-png".into(),
            data(4321, 4),
        ),
        (
            "remote_content/matrix.org/xy/z/name with space+plus".into(),
            data(77, 5),
        ),
    ];
    for (k, d) in &objects {
        env.put(MAIN, k, d).await;
    }
    // Pages of 2 keys: the listing's continuation is exercised.
    let sync = env.sync(LI).with_page_size(2);

    let t = Instant::now();
    let first = sync.sync_once(&env.db).await.unwrap();
    eprintln!("first pass {:?}: {first:?}", t.elapsed());
    assert_report(&first, 6, 6, 0, 0);
    let total: usize = objects.iter().map(|(_, d)| d.len()).sum();
    assert_eq!(first.bytes, total as u64);
    assert!(first.error.is_none(), "{first:?}");
    for (k, d) in &objects {
        let copy = env
            .get(LI, k)
            .await
            .unwrap_or_else(|| panic!("{k} not in the LI bucket"));
        assert!(
            copy == *d,
            "{k}: LI copy differs ({} vs {} bytes)",
            copy.len(),
            d.len()
        );
        let (li_key, version, size, sha256) = env.ledger(k).await.expect("ledger row");
        assert_eq!(
            (li_key.as_str(), version, size),
            (k.as_str(), 0, d.len() as i64)
        );
        assert_eq!(sha256, sha(d), "{k}");
    }
    assert_eq!(
        env.count("SELECT count(*) FROM mxstack_li.media_objects")
            .await,
        6
    );
    assert_eq!(
        env.count("SELECT count(*) FROM mxstack_li.media_object_versions")
            .await,
        6
    );

    // Incremental: nothing new, nothing copied.
    let second = sync.sync_once(&env.db).await.unwrap();
    assert_report(&second, 6, 0, 0, 0);
    assert_eq!(second.bytes, 0);

    // A new object is picked up by the next pass, and only it.
    let late = data(50_000, 6);
    env.put(MAIN, "local_content/ff/ff/late", &late).await;
    let third = sync.sync_once(&env.db).await.unwrap();
    assert_report(&third, 7, 1, 0, 0);
    assert_eq!(third.bytes, late.len() as u64);
    assert_eq!(env.get(LI, "local_content/ff/ff/late").await.unwrap(), late);
    assert_eq!(
        env.count("SELECT count(*) FROM mxstack_li.media_sync_runs WHERE finished_at IS NOT NULL")
            .await,
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_on_main_never_deletes_the_li_copy() {
    let env = env().await;
    let key = "local_content/de/le/ted";
    let keep = "local_content/ke/ep/me";
    let d = data(300_000, 7);
    env.put(MAIN, key, &d).await;
    env.put(MAIN, keep, b"stays").await;
    let sync = env.sync(LI);
    assert_report(&sync.sync_once(&env.db).await.unwrap(), 2, 2, 0, 0);
    let row = env.ledger(key).await.unwrap();

    assert!(env.delete(&env.admin, MAIN, key).await.is_success());
    assert_eq!(env.get(MAIN, key).await, None);
    let after = sync.sync_once(&env.db).await.unwrap();
    assert_report(&after, 1, 0, 0, 0);

    assert_eq!(
        env.get(LI, key).await.unwrap(),
        d,
        "LI copy of a deleted object"
    );
    assert_eq!(
        env.ledger(key).await.unwrap(),
        row,
        "ledger row of a deleted object"
    );
    assert_eq!(
        env.count("SELECT count(*) FROM mxstack_li.media_objects")
            .await,
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewrite_in_place_is_kept_under_a_new_version_key() {
    let env = env().await;
    let key = "local_content/re/wr/itten";
    let v1 = data(20_000, 8);
    let v2 = data(20_000, 9); // same size, other content: only the ETag tells
    let v3 = data(5, 10);
    let sync = env.sync(LI);

    env.put(MAIN, key, &v1).await;
    assert_report(&sync.sync_once(&env.db).await.unwrap(), 1, 1, 0, 0);
    env.put(MAIN, key, &v2).await;
    assert_report(&sync.sync_once(&env.db).await.unwrap(), 1, 1, 0, 0);
    env.put(MAIN, key, &v3).await;
    assert_report(&sync.sync_once(&env.db).await.unwrap(), 1, 1, 0, 0);
    assert_report(&sync.sync_once(&env.db).await.unwrap(), 1, 0, 0, 0);

    assert_eq!(
        env.get(LI, key).await.unwrap(),
        v1,
        "the first copy is never overwritten"
    );
    let k1 = format!("{key}.li-version-1");
    let k2 = format!("{key}.li-version-2");
    assert_eq!(env.get(LI, &k1).await.unwrap(), v2);
    assert_eq!(env.get(LI, &k2).await.unwrap(), v3);
    assert_eq!(env.ledger(key).await.unwrap(), (k2.clone(), 2, 5, sha(&v3)));
    let versions: Vec<(i32, String, String)> = env
        .db
        .query(
            "SELECT version, li_key, sha256 FROM mxstack_li.media_object_versions
              WHERE key = $1 ORDER BY version",
            &[&key],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        versions,
        vec![
            (0, key.to_string(), sha(&v1)),
            (1, k1, sha(&v2)),
            (2, k2, sha(&v3))
        ]
    );

    // An LI object the ledger does not know (left by someone else) is not overwritten either.
    let other = "local_content/pr/ee/xisting";
    env.put(LI, other, b"already in the LI bucket").await;
    env.put(MAIN, other, b"main's content").await;
    assert_report(&sync.sync_once(&env.db).await.unwrap(), 2, 1, 0, 0);
    assert_eq!(
        env.get(LI, other).await.unwrap(),
        b"already in the LI bucket"
    );
    let other1 = format!("{other}.li-version-1");
    assert_eq!(env.get(LI, &other1).await.unwrap(), b"main's content");
    assert_eq!(env.ledger(other).await.unwrap().0, other1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_pass_counts_errors_and_backlog_then_recovers() {
    let env = env().await;
    let objects: Vec<(String, Vec<u8>)> = (0..5)
        .map(|i| {
            (
                format!("local_content/fa/il/{i}"),
                data(1000 * i + 1, 20 + i as u64),
            )
        })
        .collect();
    for (k, d) in &objects {
        env.put(MAIN, k, d).await;
    }
    // The LI bucket does not exist yet: every copy fails, the pass goes on.
    let sync = env.sync(LI_LATE);
    let failed = sync.sync_once(&env.db).await.unwrap();
    assert_report(&failed, 5, 0, 5, 5);
    let msg = failed.error.clone().expect("first error recorded");
    eprintln!("failing pass: {msg}");
    assert!(msg.contains(LI_LATE), "{msg}");
    for secret in [LI_SECRET, LI_KEY, "X-Amz-Signature", "X-Amz-Credential"] {
        assert!(!msg.contains(secret), "error leaks {secret}: {msg}");
    }
    assert_eq!(
        env.count("SELECT count(*) FROM mxstack_li.media_objects")
            .await,
        0
    );
    assert_eq!(
        env.count("SELECT count(*) FROM mxstack_li.media_object_versions")
            .await,
        0
    );
    let stored: (i64, i64, Option<String>) = env
        .db
        .query_one(
            "SELECT backlog, errors, error FROM mxstack_li.media_sync_runs ORDER BY id DESC LIMIT 1",
            &[],
        )
        .await
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .unwrap();
    assert_eq!(stored, (5, 5, Some(msg)));

    // Fixed: the next pass copies everything.
    env.create_bucket(LI_LATE).await;
    let fixed = sync.sync_once(&env.db).await.unwrap();
    assert_report(&fixed, 5, 5, 0, 0);
    assert!(fixed.error.is_none());
    for (k, d) in &objects {
        assert_eq!(env.get(LI_LATE, k).await.as_ref(), Some(d), "{k}");
        assert_eq!(env.ledger(k).await.unwrap().3, sha(d));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limited_pass_leaves_a_backlog_that_the_next_pass_works_off() {
    let env = env().await;
    for i in 0..7 {
        env.put(
            MAIN,
            &format!("local_content/li/mi/{i}"),
            &data(10_000, 40 + i),
        )
        .await;
    }
    let sync = env.sync(LI).with_max_copies_per_pass(3).with_page_size(2);
    let first = sync.sync_once(&env.db).await.unwrap();
    assert_report(&first, 7, 3, 4, 0);
    assert_eq!(
        env.count("SELECT count(*) FROM mxstack_li.media_objects")
            .await,
        3
    );
    assert_eq!(last_run(&env.db).await.unwrap().unwrap().backlog, 4);
    let second = sync.sync_once(&env.db).await.unwrap();
    assert_report(&second, 7, 3, 1, 0);
    let third = sync.sync_once(&env.db).await.unwrap();
    assert_report(&third, 7, 1, 0, 0);
    assert_eq!(
        env.count("SELECT count(*) FROM mxstack_li.media_objects")
            .await,
        7
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_run_returns_the_latest_finished_pass() {
    let env = env().await;
    // No ledger at all, then an empty one.
    env.db
        .batch_execute("DROP SCHEMA mxstack_li CASCADE")
        .await
        .unwrap();
    assert!(last_run(&env.db).await.unwrap().is_none());
    MediaSync::ensure_ledger(&env.db).await.unwrap();
    MediaSync::ensure_ledger(&env.db).await.unwrap(); // idempotent
    assert!(last_run(&env.db).await.unwrap().is_none());

    let sync = env.sync(LI);
    env.put(MAIN, "local_content/la/st/1", &data(2048, 50))
        .await;
    let a = sync.sync_once(&env.db).await.unwrap();
    let got = last_run(&env.db).await.unwrap().unwrap();
    assert_report(&got, 1, 1, 0, 0);
    assert_eq!(got.bytes, 2048);
    assert_eq!(got.finished_at_unix, a.finished_at_unix);

    env.put(MAIN, "local_content/la/st/2", &data(10, 51)).await;
    let b = sync.sync_once(&env.db).await.unwrap();
    let got = last_run(&env.db).await.unwrap().unwrap();
    assert_report(&got, 2, 1, 0, 0);
    assert_eq!(got.bytes, 10);
    assert_eq!(got.finished_at_unix, b.finished_at_unix);
    assert!(b.finished_at_unix > a.finished_at_unix);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (now - b.finished_at_unix).abs() < 60.0,
        "{} vs now {now}",
        b.finished_at_unix
    );

    // A pass that never finished (its process was killed) is not "the last sync".
    env.db
        .batch_execute("INSERT INTO mxstack_li.media_sync_runs (listed, backlog) VALUES (99, 99)")
        .await
        .unwrap();
    assert_eq!(
        last_run(&env.db).await.unwrap().unwrap().finished_at_unix,
        b.finished_at_unix
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_fail_the_pass_without_leaking_them() {
    let env = env().await;
    env.put(MAIN, "local_content/cr/ed/1", b"x").await;
    let wrong = "wrong-secret-key-should-not-leak";
    let sync = MediaSync::new(&env.media_config(LI), LI_KEY.into(), wrong.into()).unwrap();
    let err: MediaError = sync.sync_once(&env.db).await.unwrap_err();
    let msg = err.to_string();
    eprintln!("wrong credentials: {msg}");
    assert!(
        msg.contains("ListObjectsV2") && msg.contains("403"),
        "{msg}"
    );
    for secret in [
        wrong,
        LI_KEY,
        "X-Amz-Signature",
        "X-Amz-Credential",
        "http://",
    ] {
        assert!(!msg.contains(secret), "error leaks {secret}: {msg}");
    }
    // The failed pass is on record, with the same message.
    let got = last_run(&env.db).await.unwrap().unwrap();
    assert_eq!((got.errors, got.copied), (1, 0));
    assert_eq!(got.error.as_deref(), Some(msg.as_str()));
    assert_eq!(
        env.count("SELECT count(*) FROM mxstack_li.media_objects")
            .await,
        0
    );
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_object_is_streamed_not_buffered() {
    const MIB: usize = 1024 * 1024;
    const SIZE: usize = 64 * MIB;
    let env = env_with(MemoryLock::Exclusive(MEMORY.write().await)).await;
    let key = "local_content/bi/gg/large";
    // Uploaded and hashed a MiB at a time: the test itself never holds the object either.
    let chunk = |i: usize| data(MIB, 1000 + i as u64);
    let mut hasher = Sha256::new();
    for i in 0..SIZE / MIB {
        hasher.update(chunk(i));
    }
    let expected = hex::encode(hasher.finalize());
    let body =
        futures_util::stream::iter((0..SIZE / MIB).map(move |i| Ok::<_, std::io::Error>(chunk(i))));
    let url = env.bucket(MAIN).put_object(Some(&env.admin), key).sign(TTL);
    let r = env
        .http
        .put(url)
        .header(reqwest::header::CONTENT_LENGTH, SIZE)
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());

    let baseline = rss_bytes();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(rss_bytes());
                std::thread::sleep(Duration::from_millis(5));
            }
            peak
        })
    };
    let t = Instant::now();
    let report = env.sync(LI).sync_once(&env.db).await.unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.join().unwrap();
    let grew = peak.saturating_sub(baseline);
    eprintln!(
        "64 MiB copied and verified in {:?}; RSS grew by {} KiB (baseline {} KiB)",
        t.elapsed(),
        grew / 1024,
        baseline / 1024
    );
    assert_report(&report, 1, 1, 0, 0);
    assert_eq!(report.bytes, SIZE as u64);
    assert_eq!(env.ledger(key).await.unwrap().3, expected);
    // Buffering the object would take at least its 64 MiB; other tests run alongside in this
    // process, hence the margin.
    assert!(
        grew < 32 * MIB as u64,
        "RSS grew by {grew} bytes during the copy"
    );
}
