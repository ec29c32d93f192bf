//! The scanner against a real clamd (with the project's EICAR test signature) and a real HTTP
//! upstream that behaves like a media worker: it checks the bearer token and serves bytes that
//! the test can replace, as an object replaced in S3 would be.

use std::collections::HashMap;
use std::net::TcpListener as StdListener;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use mxstack_content_scanner::crypto::RequestKey;
use mxstack_content_scanner::server::{router, Scanner};
use mxstack_content_scanner::ScannerConfig;
use serde_json::Value;

const EICAR: &[u8] = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";
const SIGNATURE: &str =
    "Eicar-Body-Test:0:*:45494341522d5354414e444152442d414e544956495255532d544553542d46494c45\n";

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn clamd_binary() -> &'static str {
    for p in ["/usr/sbin/clamd", "/usr/bin/clamd"] {
        if Path::new(p).exists() {
            return p;
        }
    }
    panic!("clamd is not installed: run scripts/setup.sh (installs clamav-daemon)");
}

/// clamd with its chatter in clamd.log next to its config.
fn spawn(conf: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(conf.with_file_name("clamd.log"))
        .unwrap();
    Command::new(clamd_binary())
        .arg("--foreground")
        .arg(format!("--config-file={}", conf.display()))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap()
}

struct Clamd {
    child: Child,
    conf: std::path::PathBuf,
    port: u16,
}

impl Clamd {
    fn start(dir: &Path, port: u16) -> Clamd {
        let db = dir.join("db");
        std::fs::create_dir_all(&db).unwrap();
        std::fs::write(db.join("mxstack-test.ndb"), SIGNATURE).unwrap();
        let conf = dir.join("clamd.conf");
        std::fs::write(
            &conf,
            format!(
                "Foreground yes\nDatabaseDirectory {}\nTCPSocket {port}\nTCPAddr 127.0.0.1\nStreamMaxLength 10M\nMaxFileSize 10M\nMaxScanSize 40M\nAlertExceedsMax yes\nIdleTimeout 60\n",
                db.display()
            ),
        )
        .unwrap();
        let mut c = Clamd {
            child: spawn(&conf),
            conf,
            port,
        };
        c.wait_ready();
        c
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            assert!(
                self.child.try_wait().unwrap().is_none(),
                "clamd exited at start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("clamd did not start");
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn restart(&mut self) {
        self.child = spawn(&self.conf);
        self.wait_ready();
    }
}

impl Drop for Clamd {
    fn drop(&mut self) {
        self.stop();
    }
}

type Files = Arc<Mutex<HashMap<String, Vec<u8>>>>;

/// Serves `d/flip` differently on every other request, like an object replaced in S3 between the
/// scanner's scan pass and its serving pass.
static FLIPS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
/// Authorized fetches of `d/big`: one per pass the scanner makes over it.
static BIG_FETCHES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A media worker stand-in: authenticated download of `/{server}/{media}`, 401 without the
/// right token, 404 for unknown media.
async fn download(
    State(files): State<Files>,
    UrlPath((server, media)): UrlPath<(String, String)>,
    headers: HeaderMap,
) -> axum::response::Response {
    match headers.get("authorization").and_then(|v| v.to_str().ok()) {
        Some("Bearer good") => {}
        Some(_) => {
            return (
                StatusCode::UNAUTHORIZED,
                axum::Json(serde_json::json!({"errcode": "M_UNKNOWN_TOKEN", "error": "bad"})),
            )
                .into_response()
        }
        None => {
            return (
                StatusCode::UNAUTHORIZED,
                axum::Json(serde_json::json!({"errcode": "M_MISSING_TOKEN", "error": "none"})),
            )
                .into_response()
        }
    }
    if media == "big" {
        BIG_FETCHES.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
    if media == "flip" {
        let mut b = pattern(3 << 20);
        if FLIPS.fetch_add(1, std::sync::atomic::Ordering::SeqCst) % 2 == 1 {
            b[1000] ^= 0xff;
        }
        return ([("content-type", "application/octet-stream")], b).into_response();
    }
    match files.lock().unwrap().get(&format!("{server}/{media}")) {
        Some(b) => ([("content-type", "application/octet-stream")], b.clone()).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({"errcode": "M_NOT_FOUND", "error": "no"})),
        )
            .into_response(),
    }
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 251) as u8).collect()
}

#[test]
fn scanner_against_real_clamd() {
    let dir = tempfile::tempdir().unwrap();
    let clamd_port = free_port();
    let mut clamd = Clamd::start(dir.path(), clamd_port);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let files: Files = Arc::new(Mutex::new(HashMap::new()));
    {
        let mut f = files.lock().unwrap();
        f.insert("d/clean".into(), pattern(1000));
        f.insert("d/eicar".into(), EICAR.to_vec());
        f.insert("d/big".into(), pattern(3 << 20));
        let mut big_bad = pattern(3 << 20);
        big_bad.extend_from_slice(EICAR);
        f.insert("d/bigbad".into(), big_bad);
        f.insert("d/huge".into(), pattern(6 << 20));
    }
    let (upstream_port, scanner_port) = (free_port(), free_port());
    let upstream = axum::Router::new()
        .route(
            "/_matrix/client/v1/media/download/{server}/{media}",
            get(download),
        )
        .with_state(files.clone());
    let cfg = ScannerConfig {
        listen: format!("127.0.0.1:{scanner_port}"),
        upstreams: vec![format!("http://127.0.0.1:{upstream_port}")],
        clamd: format!("127.0.0.1:{clamd_port}"),
        max_file_bytes: 5 << 20,
        memory_buffer_bytes: 64 << 10,
        memory_budget_bytes: 256 << 10,
        clamd_connections: 4,
        scan_timeout_secs: 20,
        verdict_cache_entries: 100,
        request_secret_path: dir.path().join("unused"),
    };
    let key = RequestKey::from_base64("CQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk=").unwrap();
    // The same scanner with room to hold 3 MiB files (a quarter of a 16 MiB budget).
    let roomy_port = free_port();
    let roomy = ScannerConfig {
        listen: format!("127.0.0.1:{roomy_port}"),
        memory_budget_bytes: 16 << 20,
        ..cfg.clone()
    };
    let roomy_key =
        RequestKey::from_base64("CQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk=").unwrap();
    rt.spawn(async move {
        let l = tokio::net::TcpListener::bind(("127.0.0.1", roomy_port))
            .await
            .unwrap();
        axum::serve(l, router(Arc::new(Scanner::new(roomy, roomy_key))))
            .await
            .unwrap();
    });
    rt.spawn(async move {
        let l = tokio::net::TcpListener::bind(("127.0.0.1", upstream_port))
            .await
            .unwrap();
        axum::serve(l, upstream).await.unwrap();
    });
    rt.spawn(async move {
        let l = tokio::net::TcpListener::bind(("127.0.0.1", scanner_port))
            .await
            .unwrap();
        axum::serve(l, router(Arc::new(Scanner::new(cfg, key))))
            .await
            .unwrap();
    });

    let base = format!("http://127.0.0.1:{scanner_port}");
    let get = |path: &str, token: Option<&str>| -> (u16, Vec<u8>) {
        rt.block_on(async {
            let mut r = reqwest::Client::new().get(format!("{base}{path}"));
            if let Some(t) = token {
                r = r.header("authorization", format!("Bearer {t}"));
            }
            let resp = r.send().await.unwrap();
            let status = resp.status().as_u16();
            // A body cut off mid-stream is an error here; report it as status 0.
            match resp.bytes().await {
                Ok(b) => (status, b.to_vec()),
                Err(_) => (0, vec![]),
            }
        })
    };
    let json = |b: &[u8]| -> Value { serde_json::from_slice(b).unwrap() };
    let dl = |m: &str| format!("/_matrix/client/v1/media/download/d/{m}");
    std::thread::sleep(Duration::from_millis(300));

    // Clean media passes byte-identical, in memory and streamed.
    let (s, b) = get(&dl("clean"), Some("good"));
    assert_eq!((s, b), (200, pattern(1000)));
    let fetches = || BIG_FETCHES.load(std::sync::atomic::Ordering::SeqCst);
    let before = fetches();
    let (s, b) = get(&dl("big"), Some("good"));
    assert_eq!(s, 200);
    assert!(b == pattern(3 << 20), "streamed body differs");
    assert_eq!(
        fetches() - before,
        2,
        "above the memory buffer: a scan pass and a serving pass"
    );

    // Infected media is refused, small and streamed (the signature in the last bytes).
    for m in ["eicar", "bigbad"] {
        let (s, b) = get(&dl(m), Some("good"));
        assert_eq!(s, 403, "{m}");
        assert_eq!(json(&b)["reason"], "MCS_MEDIA_NOT_CLEAN");
    }

    // Over the limit: an explicit refusal, never the bytes.
    let (s, b) = get(&dl("huge"), Some("good"));
    assert_eq!(s, 403);
    assert_eq!(json(&b)["reason"], "MCS_MEDIA_TOO_LARGE");

    // Cached verdicts never bypass authorization: the media worker's 401 comes through.
    let (s, b) = get(&dl("clean"), Some("bad"));
    assert_eq!(s, 401);
    assert_eq!(json(&b)["errcode"], "M_UNKNOWN_TOKEN");
    let (s, _) = get(&dl("clean"), None);
    assert_eq!(s, 401);
    let (s, b) = get(
        "/_matrix/media_proxy/unstable/download/d/clean",
        Some("bad"),
    );
    assert_eq!(s, 401);
    assert_eq!(json(&b)["reason"], "M_UNKNOWN_TOKEN");

    // The MCS API: scan reports, download serves.
    let (s, b) = get("/_matrix/media_proxy/unstable/scan/d/eicar", Some("good"));
    assert_eq!(s, 200);
    assert_eq!(json(&b)["clean"], false);
    let (s, b) = get("/_matrix/media_proxy/unstable/scan/d/clean", Some("good"));
    assert_eq!((s, json(&b)["clean"].clone()), (200, Value::Bool(true)));
    let (s, _) = get("/_matrix/media_proxy/unstable/scan/d/missing", Some("good"));
    assert_eq!(s, 404);

    // Same media ID, replaced content (as an object swapped in S3): scanned again, refused.
    files
        .lock()
        .unwrap()
        .insert("d/clean".into(), EICAR.to_vec());
    let (s, _) = get(&dl("clean"), Some("good"));
    assert_eq!(
        s, 403,
        "replaced content must not ride on the cached verdict"
    );
    // A large file replaced between the scan pass and the serving pass is cut off: the client
    // never gets a complete body it could take for scanned.
    let (s, b) = get(&dl("flip"), Some("good"));
    assert_eq!(s, 0, "got a complete response of {} bytes", b.len());

    // With room in the budget the same files are held: one fetch, scanned as it arrives, and the
    // bytes served are the bytes scanned (a flip cannot fall between two passes).
    let roomy_base = format!("http://127.0.0.1:{roomy_port}");
    let roomy_get = |m: &str| -> (u16, Vec<u8>) {
        rt.block_on(async {
            let resp = reqwest::Client::new()
                .get(format!("{roomy_base}{}", dl(m)))
                .header("authorization", "Bearer good")
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            (status, resp.bytes().await.unwrap().to_vec())
        })
    };
    let before = fetches();
    let (s, b) = roomy_get("big");
    assert_eq!(s, 200);
    assert!(b == pattern(3 << 20), "held body differs");
    assert_eq!(fetches() - before, 1, "a held file is fetched once");
    let (s, b) = roomy_get("flip");
    assert_eq!((s, b.len()), (200, 3 << 20));
    let (s, b) = roomy_get("bigbad");
    assert_eq!(s, 403, "infected bytes are refused on the held path too");
    assert_eq!(json(&b)["reason"], "MCS_MEDIA_NOT_CLEAN");

    // Metrics count what happened.
    let (_, m) = get("/metrics", None);
    let m = String::from_utf8(m).unwrap();
    assert!(
        m.contains("mxstack_scanner_verdicts_total{verdict=\"infected\"}"),
        "{m}"
    );
    let hits: u64 = m
        .lines()
        .find(|l| l.starts_with("mxstack_scanner_cache_hits_total "))
        .and_then(|l| l.split(' ').nth(1))
        .unwrap()
        .parse()
        .unwrap();
    assert!(hits >= 1, "the repeated scan of d/clean hit the cache: {m}");

    // clamd down: a distinct scan error, not "infected"; recovery when it returns.
    clamd.stop();
    files
        .lock()
        .unwrap()
        .insert("d/fresh".into(), pattern(2000));
    let (s, b) = get(&dl("fresh"), Some("good"));
    assert_eq!(s, 503);
    assert_eq!(json(&b)["reason"], "MCS_SCAN_UNAVAILABLE");
    let (s, _) = get("/ready", None);
    assert_eq!(s, 503);
    clamd.restart();
    let (s, b) = get(&dl("fresh"), Some("good"));
    assert_eq!((s, b), (200, pattern(2000)));

    // Upload scans (what the Synapse module calls).
    let post = |body: Vec<u8>| -> (u16, Value) {
        rt.block_on(async {
            let r = reqwest::Client::new()
                .post(format!("{base}/_mxstack/scan"))
                .body(body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (
                status,
                serde_json::from_slice(&r.bytes().await.unwrap()).unwrap(),
            )
        })
    };
    let (s, v) = post(EICAR.to_vec());
    assert_eq!(
        (s, v["clean"].clone(), v["verdict"].clone()),
        (200, Value::Bool(false), Value::from("infected"))
    );
    let (s, v) = post(pattern(3 << 20));
    assert_eq!((s, v["clean"].clone()), (200, Value::Bool(true)));
    let (s, v) = post(pattern(6 << 20));
    assert_eq!((s, v["verdict"].clone()), (200, Value::from("too_large")));
    // The client is still sending when the verdict is known: it must get the verdict, not a
    // broken pipe (the scanner used to answer without reading the rest of the body, and the
    // connection closed under the sender). Made certain by pausing after the limit.
    let addr = base.trim_start_matches("http://").to_string();
    assert_eq!(slow_oversized_upload(&addr, 6 << 20, 2 << 20), "too_large");
}

/// POSTs `first` bytes of an upload, pauses (the scanner has seen more than its limit), sends
/// `rest` more, then reads the verdict.
fn slow_oversized_upload(addr: &str, first: usize, rest: usize) -> String {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    write!(
        c,
        "POST /_mxstack/scan HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        first + rest
    )
    .unwrap();
    c.write_all(&pattern(first)).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    c.write_all(&pattern(rest))
        .expect("the scanner still reads the upload after its verdict");
    let mut answer = String::new();
    c.read_to_string(&mut answer)
        .expect("the scanner answers the whole upload");
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str::<Value>(body.trim()).unwrap_or_default()["verdict"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}
