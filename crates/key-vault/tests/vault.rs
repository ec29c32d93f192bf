//! The vault as it runs: the real binary on 127.0.0.1, a real SQLite file in a temp dir (and a
//! throwaway PostgreSQL cluster when the server binaries are installed), real HTTP.

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const STORE_KEY: &str = "store-key-0123456789abcdef";
const RETRIEVAL_KEY: &str = "retrieval-key-0123456789abcdef";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `mxstack-key-vault`; stderr appended to `log` (kept across restarts).
struct Vault {
    child: Option<Child>,
    port: u16,
    config: PathBuf,
    log: PathBuf,
    env: Vec<(String, String)>,
}

impl Vault {
    fn start(
        dir: &Path,
        database_yaml: &str,
        vault_pk: &str,
        break_glass_pk: &str,
        env: &[(&str, &str)],
    ) -> Vault {
        Vault::start_with(dir, database_yaml, vault_pk, break_glass_pk, "", env)
    }

    /// `extra_yaml`: more top-level config lines (e.g. `warrant_signer`).
    fn start_with(
        dir: &Path,
        database_yaml: &str,
        vault_pk: &str,
        break_glass_pk: &str,
        extra_yaml: &str,
        env: &[(&str, &str)],
    ) -> Vault {
        let port = free_port();
        let config = dir.join("vault.yaml");
        std::fs::write(
            &config,
            format!(
                "listen: 127.0.0.1:{port}\ndatabase:\n{database_yaml}\nrecipients:\n  vault: {vault_pk}\n  break_glass: {break_glass_pk}\nstore_api_key_env: TEST_KV_STORE_KEY\nretrieval_api_key_env: TEST_KV_RETRIEVAL_KEY\n{extra_yaml}"
            ),
        )
        .unwrap();
        let mut v = Vault {
            child: None,
            port,
            config,
            log: dir.join("vault.log"),
            env: env
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        };
        v.spawn();
        v
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_mxstack-key-vault"))
            .arg("--config")
            .arg(&self.config)
            .env("TEST_KV_STORE_KEY", STORE_KEY)
            .env("TEST_KV_RETRIEVAL_KEY", RETRIEVAL_KEY)
            .envs(self.env.iter().map(|(a, b)| (a, b)))
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        self.child = Some(child);
        let start = Instant::now();
        loop {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                use std::io::Write;
                s.write_all(b"GET /health HTTP/1.0\r\n\r\n").unwrap();
                let mut out = String::new();
                let _ = s.read_to_string(&mut out);
                if out.starts_with("HTTP/1.0 200") || out.starts_with("HTTP/1.1 200") {
                    return;
                }
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("the vault exited ({status}): {}", self.log_text());
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "vault not healthy: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }

    fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Vault {
    fn drop(&mut self) {
        self.stop();
    }
}

fn identity() -> (String, age::x25519::Identity) {
    let (public, secret) = mxstack_key_vault::keygen();
    (public, secret.parse().unwrap())
}

/// A fresh secret-looking value that cannot occur by chance in any file.
fn secret_value(tag: &str) -> String {
    let (_, s) = mxstack_key_vault::keygen();
    format!("EsT{tag} {} {}", &s[20..32], &s[32..44])
}

async fn store(c: &reqwest::Client, v: &Vault, key: &str, body: &Value) -> (u16, Value) {
    let r = c
        .post(v.url("/v1/keys"))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn retrieve(
    c: &reqwest::Client,
    v: &Vault,
    key: Option<&str>,
    user: &str,
    warrant: Option<&str>,
) -> (u16, Value) {
    let mut req = c.get(v.url(&format!(
        "/v1/keys/{}",
        user.replace('@', "%40").replace(':', "%3A")
    )));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    if let Some(w) = warrant {
        req = req.header("X-Mxstack-Warrant", w);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn metric(c: &reqwest::Client, v: &Vault, line_start: &str) -> u64 {
    let text = c
        .get(v.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| {
            l.strip_prefix(line_start)
                .map(|n| n.trim().parse().unwrap())
        })
        .unwrap_or_else(|| panic!("{line_start} not in {text}"))
}

fn decrypt(id: &age::x25519::Identity, ciphertext: &str) -> String {
    String::from_utf8(age::decrypt(id, ciphertext.as_bytes()).unwrap()).unwrap()
}

/// Everything the API promises, on whichever database `database_yaml` names. Returns the
/// plaintexts stored (for the caller's byte checks) and the vault (still running).
async fn scenario(dir: &Path, database_yaml: &str, env: &[(&str, &str)]) -> (Vec<String>, Vault) {
    let (vault_pk, vault_id) = identity();
    let (bg_pk, bg_id) = identity();
    let mut v = Vault::start(dir, database_yaml, &vault_pk, &bg_pk, env);
    let c = reqwest::Client::new();
    let alice = "@alice:example.org";
    let k1 = secret_value("a");
    let k2 = secret_value("b");

    // Two versions for alice, one for bob.
    let (s, r) = store(
        &c,
        &v,
        STORE_KEY,
        &json!({"user_id": alice, "device_id": "DEV1", "kind": "recovery_key", "key": k1}),
    )
    .await;
    assert_eq!(
        (s, r.clone()),
        (201, json!({"user_id": alice, "version": 1}))
    );
    let (s, r) = store(
        &c,
        &v,
        STORE_KEY,
        &json!({"user_id": alice, "kind": "backup_key", "backup_version": "7", "key": k2}),
    )
    .await;
    assert_eq!(
        (s, r.clone()),
        (201, json!({"user_id": alice, "version": 2}))
    );
    let kb = secret_value("c");
    let (s, r) = store(
        &c,
        &v,
        STORE_KEY,
        &json!({"user_id": "@bob:example.org", "kind": "recovery_key", "key": kb}),
    )
    .await;
    assert_eq!((s, r["version"].clone()), (201, json!(1)));
    assert!(!r.to_string().contains(&kb));

    // Retrieval: newest first, ciphertext only, decryptable by the vault key and break-glass.
    let (s, r) = retrieve(&c, &v, Some(RETRIEVAL_KEY), alice, Some("W-2026-001")).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["user_id"], alice);
    assert_eq!(r["warrant"], "W-2026-001");
    let keys = r["keys"].as_array().unwrap();
    assert_eq!(
        keys.iter()
            .map(|k| k["version"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        [2, 1]
    );
    assert_eq!(keys[0]["kind"], "backup_key");
    assert_eq!(keys[0]["backup_version"], "7");
    assert_eq!(keys[0]["device_id"], Value::Null);
    assert_eq!(keys[1]["kind"], "recovery_key");
    assert_eq!(keys[1]["device_id"], "DEV1");
    assert!(keys[1]["created_at"].as_str().unwrap().ends_with('Z'));
    assert!(!r.to_string().contains(&k1) && !r.to_string().contains(&k2));
    for (k, plain) in keys.iter().zip([&k2, &k1]) {
        let ct = k["ciphertext"].as_str().unwrap();
        assert!(ct.starts_with("-----BEGIN AGE ENCRYPTED FILE-----"));
        assert_eq!(k["fingerprint"], hex::encode(Sha256::digest(ct.as_bytes())));
        assert_eq!(&decrypt(&vault_id, ct), plain);
        assert_eq!(&decrypt(&bg_id, ct), plain);
        let (_, stranger) = identity();
        assert!(age::decrypt(&stranger, ct.as_bytes()).is_err());
    }
    // Break-glass with the standard age CLI, offline, where installed.
    if Path::new("/usr/bin/age").exists() {
        let idfile = dir.join("break-glass.txt");
        use age::secrecy::ExposeSecret;
        std::fs::write(&idfile, format!("{}\n", bg_id.to_string().expose_secret())).unwrap();
        let ctfile = dir.join("v1.age");
        std::fs::write(&ctfile, keys[1]["ciphertext"].as_str().unwrap()).unwrap();
        let out = Command::new("/usr/bin/age")
            .arg("-d")
            .arg("-i")
            .arg(&idfile)
            .arg(&ctfile)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "age -d: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8(out.stdout).unwrap(), k1);
        std::fs::remove_file(&idfile).unwrap();
    }
    // A user with nothing stored: an empty list (recorded too).
    let (s, r) = retrieve(
        &c,
        &v,
        Some(RETRIEVAL_KEY),
        "@nobody:example.org",
        Some("W-2026-001"),
    )
    .await;
    assert_eq!((s, r["keys"].clone()), (200, json!([])));

    // Keys are not interchangeable; wrong or missing keys are 401 and counted.
    let (s, r) = retrieve(&c, &v, Some(STORE_KEY), alice, Some("W-2026-001")).await;
    assert_eq!((s, r["errcode"].clone()), (401, json!("UNAUTHORIZED")));
    let (s, _) = retrieve(&c, &v, None, alice, Some("W-2026-001")).await;
    assert_eq!(s, 401);
    assert_eq!(
        metric(
            &c,
            &v,
            "mxstack_keyvault_auth_failures_total{endpoint=\"retrieve\"}"
        )
        .await,
        2
    );
    let before = metric(
        &c,
        &v,
        "mxstack_keyvault_auth_failures_total{endpoint=\"store\"}",
    )
    .await;
    assert_eq!(before, 0);
    let body = json!({"user_id": alice, "kind": "recovery_key", "key": secret_value("x")});
    let (s, r) = store(&c, &v, RETRIEVAL_KEY, &body).await;
    assert_eq!((s, r["errcode"].clone()), (401, json!("UNAUTHORIZED")));
    let (s, _) = store(&c, &v, "store-key-0123456789abcdeX", &body).await;
    assert_eq!(s, 401);
    let r = c.post(v.url("/v1/keys")).json(&body).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    assert_eq!(
        metric(
            &c,
            &v,
            "mxstack_keyvault_auth_failures_total{endpoint=\"store\"}"
        )
        .await,
        3
    );

    // The warrant header is required.
    let (s, r) = retrieve(&c, &v, Some(RETRIEVAL_KEY), alice, None).await;
    assert_eq!((s, r["errcode"].clone()), (400, json!("MISSING_WARRANT")));
    let (s, _) = retrieve(&c, &v, Some(RETRIEVAL_KEY), alice, Some("   ")).await;
    assert_eq!(s, 400);

    // Malformed requests, and the body limit.
    let bad = secret_value("bad");
    for body in [
        json!({"user_id": "alice", "kind": "recovery_key", "key": bad}),
        json!({"user_id": alice, "kind": "room_key", "key": bad}),
        json!({"user_id": alice, "kind": "recovery_key"}),
        json!({"user_id": alice, "kind": "recovery_key", "key": bad, "note": "x"}),
    ] {
        let (s, r) = store(&c, &v, STORE_KEY, &body).await;
        assert_eq!(
            (s, r["errcode"].clone()),
            (400, json!("BAD_REQUEST")),
            "{body}"
        );
        assert!(!r.to_string().contains(&bad));
    }
    let huge = "A".repeat(70 * 1024);
    let (s, r) = store(
        &c,
        &v,
        STORE_KEY,
        &json!({"user_id": alice, "kind": "recovery_key", "key": huge}),
    )
    .await;
    assert_eq!((s, r["errcode"].clone()), (413, json!("TOO_LARGE")));

    // Concurrent stores for one user get distinct, consecutive versions.
    let carol = "@carol:example.org";
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (c, url, value) = (c.clone(), v.url("/v1/keys"), secret_value(&format!("p{i}")));
        tasks.push(tokio::spawn(async move {
            let r = c
                .post(url)
                .bearer_auth(STORE_KEY)
                .json(&json!({"user_id": carol, "kind": "recovery_key", "key": value}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 201);
            r.json::<Value>().await.unwrap()["version"]
                .as_i64()
                .unwrap()
        }));
    }
    let mut versions = Vec::new();
    for t in tasks {
        versions.push(t.await.unwrap());
    }
    versions.sort();
    assert_eq!(versions, (1..=8).collect::<Vec<i64>>());

    assert_eq!(
        metric(&c, &v, "mxstack_keyvault_keys_stored_total").await,
        11
    );
    assert_eq!(metric(&c, &v, "mxstack_keyvault_retrievals_total").await, 2);

    // A restart on the same database keeps everything; numbering continues.
    v.restart();
    let (s, r) = retrieve(&c, &v, Some(RETRIEVAL_KEY), alice, Some("W-2026-002")).await;
    assert_eq!(s, 200);
    let keys = r["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(
        decrypt(&vault_id, keys[0]["ciphertext"].as_str().unwrap()),
        k2
    );
    assert_eq!(
        decrypt(&vault_id, keys[1]["ciphertext"].as_str().unwrap()),
        k1
    );
    let k3 = secret_value("d");
    let (s, r) = store(
        &c,
        &v,
        STORE_KEY,
        &json!({"user_id": alice, "kind": "recovery_key", "key": k3}),
    )
    .await;
    assert_eq!((s, r["version"].clone()), (201, json!(3)));

    // The log names what happened and never a key.
    let log = v.log_text();
    assert!(
        log.contains("retrieval for @alice:example.org under warrant \"W-2026-001\""),
        "{log}"
    );
    assert!(
        log.contains("stored recovery_key version 1 for @alice:example.org"),
        "{log}"
    );
    assert!(log.contains("401 store"), "{log}");
    let plaintexts = vec![k1, k2, k3, kb, bad];
    for p in &plaintexts {
        assert!(!log.contains(p.as_str()), "a plaintext key is in the log");
        assert!(
            !log.contains(&p[4..]),
            "part of a plaintext key is in the log"
        );
    }
    (plaintexts, v)
}

fn assert_not_in_files(files: &[PathBuf], plaintexts: &[String]) {
    for f in files {
        let Ok(bytes) = std::fs::read(f) else {
            continue;
        };
        for p in plaintexts {
            for needle in [p.as_bytes(), &p.as_bytes()[4..]] {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle),
                    "a plaintext key is in {}",
                    f.display()
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_vault_stores_versions_retrieves_under_a_warrant_and_refuses_rewrites() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data/vault.db");
    let (plaintexts, mut v) =
        scenario(dir.path(), &format!("  sqlite: {}", db.display()), &[]).await;
    v.stop();

    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&db).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let conn = rusqlite::Connection::open(&db).unwrap();
    // Every retrieval is on record with its warrant and the versions it returned.
    let rows: Vec<(String, String, String)> = conn
        .prepare("SELECT user_id, warrant, versions FROM retrievals ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        rows,
        [
            (
                "@alice:example.org".into(),
                "W-2026-001".into(),
                "[2,1]".into()
            ),
            (
                "@nobody:example.org".into(),
                "W-2026-001".into(),
                "[]".into()
            ),
            (
                "@alice:example.org".into(),
                "W-2026-002".into(),
                "[2,1]".into()
            ),
        ]
    );
    // The database itself refuses to rewrite history.
    for sql in [
        "UPDATE keys SET ciphertext = 'x' WHERE version = 1",
        "DELETE FROM keys WHERE user_id = '@alice:example.org'",
        "DELETE FROM keys",
        "UPDATE retrievals SET warrant = 'none'",
        "DELETE FROM retrievals",
    ] {
        let e = conn.execute(sql, []).unwrap_err().to_string();
        assert!(e.contains("append-only"), "{sql}: {e}");
    }
    let n: i64 = conn
        .query_row("SELECT count(*) FROM keys", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 12);
    drop(conn);
    // No plaintext key in the database files.
    let files: Vec<PathBuf> = std::fs::read_dir(db.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(!files.is_empty());
    assert_not_in_files(&files, &plaintexts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_warrant_signer_only_a_fresh_signed_claim_naming_the_user_retrieves() {
    use mxstack_key_vault::warrant::{public_key_b64, sign, WarrantClaim};
    let dir = tempfile::tempdir().unwrap();
    let (vault_pk, _) = identity();
    let (bg_pk, _) = identity();
    let console = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    let mut v = Vault::start_with(
        dir.path(),
        &format!("  sqlite: {}", dir.path().join("v.db").display()),
        &vault_pk,
        &bg_pk,
        &format!("warrant_signer: {}\n", public_key_b64(&console)),
        &[],
    );
    let c = reqwest::Client::new();
    let alice = "@alice:example.org";
    let (s, _) = store(
        &c,
        &v,
        STORE_KEY,
        &json!({"user_id": alice, "kind": "recovery_key", "key": secret_value("w")}),
    )
    .await;
    assert_eq!(s, 201);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let claim = |users: &[&str], expires_ms: i64, issued_ms: i64| WarrantClaim {
        warrant_id: 4,
        case_ref: "CASE-4".into(),
        users: users.iter().map(|u| u.to_string()).collect(),
        expires_ms,
        issued_ms,
    };
    let good = sign(&claim(&[alice], now + 60_000, now), &console);
    let (s, body) = retrieve(&c, &v, Some(RETRIEVAL_KEY), alice, Some(&good)).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["keys"].as_array().unwrap().len(), 1);
    assert_eq!(body["warrant"], "CASE-4 (console warrant #4)");
    // Free text, another user, expired, stale, another signer: 403, nothing returned.
    let other = ed25519_dalek::SigningKey::from_bytes(&[8; 32]);
    for (why, token) in [
        ("free text", "W-2026-001".to_string()),
        (
            "other user",
            sign(&claim(&["@bob:example.org"], now + 60_000, now), &console),
        ),
        ("expired", sign(&claim(&[alice], now - 1, now), &console)),
        (
            "stale",
            sign(&claim(&[alice], now + 60_000, now - 600_000), &console),
        ),
        (
            "other signer",
            sign(&claim(&[alice], now + 60_000, now), &other),
        ),
    ] {
        let (s, body) = retrieve(&c, &v, Some(RETRIEVAL_KEY), alice, Some(&token)).await;
        assert_eq!((why, s), (why, 403), "{body}");
        assert_eq!(body["errcode"], "WARRANT_REFUSED");
        assert!(body.get("keys").is_none());
    }
    assert_eq!(
        metric(&c, &v, "mxstack_keyvault_warrants_refused_total").await,
        5
    );
    v.stop();
    let conn = rusqlite::Connection::open(dir.path().join("v.db")).unwrap();
    let n: i64 = conn
        .query_row("SELECT count(*) FROM retrievals", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1, "only the verified retrieval is on record");
}

#[test]
fn refuses_to_start_without_its_keys() {
    let dir = tempfile::tempdir().unwrap();
    let (pk, _) = identity();
    let config = dir.path().join("vault.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{}\ndatabase: {{sqlite: {}}}\nrecipients: {{vault: {pk}}}\nstore_api_key_env: TEST_KV_S\nretrieval_api_key_env: TEST_KV_R\n",
            free_port(),
            dir.path().join("v.db").display()
        ),
    )
    .unwrap();
    let run = |env: &[(&str, &str)]| {
        let out = Command::new(env!("CARGO_BIN_EXE_mxstack-key-vault"))
            .arg("--config")
            .arg(&config)
            .env_remove("TEST_KV_S")
            .env_remove("TEST_KV_R")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8(out.stderr).unwrap()
    };
    assert!(run(&[("TEST_KV_R", RETRIEVAL_KEY)]).contains("TEST_KV_S"));
    let e = run(&[
        ("TEST_KV_S", "same-key-0123456789"),
        ("TEST_KV_R", "same-key-0123456789"),
    ]);
    assert!(
        e.contains("must differ") && !e.contains("same-key-0123456789"),
        "{e}"
    );
    assert!(run(&[("TEST_KV_S", "short"), ("TEST_KV_R", RETRIEVAL_KEY)]).contains("at least"));
}

// ---- PostgreSQL ----

fn pg_bin() -> Option<PathBuf> {
    ["17", "16", "15", "14"]
        .iter()
        .map(|v| PathBuf::from(format!("/usr/lib/postgresql/{v}/bin")))
        .find(|p| p.join("postgres").exists())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.trim_ascii() == b"0")
        .unwrap_or(false)
}

/// PostgreSQL refuses to run as root: run its programs as `postgres` then.
fn pg_command(bin: &Path, program: &str) -> Command {
    use std::os::unix::process::CommandExt;
    let mut c = Command::new(bin.join(program));
    if is_root() {
        let id = |flag: &str| -> u32 {
            String::from_utf8(
                Command::new("id")
                    .args([flag, "postgres"])
                    .output()
                    .unwrap()
                    .stdout,
            )
            .unwrap()
            .trim()
            .parse()
            .unwrap()
        };
        c.uid(id("-u")).gid(id("-g")).current_dir("/tmp");
    }
    c
}

struct Pg {
    bin: PathBuf,
    port: u16,
    dir: tempfile::TempDir,
    child: Child,
}

impl Pg {
    fn start(bin: PathBuf) -> Pg {
        let dir = tempfile::Builder::new()
            .prefix("mxstack-kv-test-pg-")
            .tempdir_in("/var/tmp")
            .unwrap();
        if is_root() {
            assert!(Command::new("chown")
                .arg("postgres:postgres")
                .arg(dir.path())
                .status()
                .unwrap()
                .success());
        }
        let data = dir.path().join("data");
        let out = pg_command(&bin, "initdb")
            .arg("-D")
            .arg(&data)
            .args([
                "--username=postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let child = pg_command(&bin, "postgres")
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-k"])
            .arg(dir.path())
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pg = Pg {
            bin,
            port,
            dir,
            child,
        };
        let start = Instant::now();
        while !pg_command(&pg.bin, "pg_isready")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q"])
            .status()
            .unwrap()
            .success()
        {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "postgres did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        pg
    }

    fn psql(&self, db: &str, sql: &str) -> Result<String, String> {
        let out = pg_command(&self.bin, "psql")
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-p",
            ])
            .arg(self.port.to_string())
            .args(["-d", db, "-c", sql])
            .output()
            .unwrap();
        if out.status.success() {
            Ok(String::from_utf8(out.stdout).unwrap())
        } else {
            Err(String::from_utf8(out.stderr).unwrap())
        }
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_vault_behaves_the_same() {
    let Some(bin) = pg_bin() else {
        eprintln!("SKIPPED: PostgreSQL server binaries not installed (scripts/setup.sh installs postgresql-15)");
        return;
    };
    let pg = Pg::start(bin);
    pg.psql(
        "postgres",
        "CREATE ROLE keyvault LOGIN PASSWORD 'kv-password'",
    )
    .unwrap();
    pg.psql("postgres", "CREATE DATABASE keyvault OWNER keyvault")
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "  postgres: {{host: 127.0.0.1, port: {}, dbname: keyvault, user: keyvault, password_env: TEST_KV_PG_PASSWORD}}",
        pg.port
    );
    let (plaintexts, mut v) =
        scenario(dir.path(), &yaml, &[("TEST_KV_PG_PASSWORD", "kv-password")]).await;
    v.stop();
    assert_eq!(
        pg.psql("keyvault", "SELECT user_id || ' ' || warrant || ' ' || versions FROM retrievals ORDER BY id").unwrap(),
        "@alice:example.org W-2026-001 [2,1]\n@nobody:example.org W-2026-001 []\n@alice:example.org W-2026-002 [2,1]\n"
    );
    for sql in [
        "UPDATE keys SET ciphertext = 'x' WHERE version = 1",
        "DELETE FROM keys",
        "TRUNCATE keys",
        "UPDATE retrievals SET warrant = 'none'",
        "DELETE FROM retrievals",
        "TRUNCATE retrievals",
    ] {
        let e = pg.psql("keyvault", sql).unwrap_err();
        assert!(e.contains("append-only"), "{sql}: {e}");
    }
    assert_eq!(
        pg.psql("keyvault", "SELECT count(*) FROM keys").unwrap(),
        "12\n"
    );
    let dump = pg
        .psql(
            "keyvault",
            "SELECT string_agg(ciphertext || fingerprint || coalesce(device_id, ''), '') FROM keys",
        )
        .unwrap();
    for p in &plaintexts {
        assert!(!dump.contains(p.as_str()) && !dump.contains(&p[4..]));
    }
    let _ = &pg.dir;
}
