//! Real servers for the tests: throwaway PostgreSQL clusters and a SeaweedFS S3 server, each in its
//! own directory under /var/tmp, on 127.0.0.1, stopped and removed on drop.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free port: the kernel's choice, or, with `MXSTACK_TEST_PORTS=FIRST-LAST`, one of that block
/// (a machine shared with other stacks hands each its own block), never the same twice in a
/// process.
pub fn free_port() -> u16 {
    if let Some((first, last)) = std::env::var("MXSTACK_TEST_PORTS").ok().and_then(|r| {
        let (a, b) = r.split_once('-')?;
        Some((a.parse::<u16>().ok()?, b.parse::<u16>().ok()?))
    }) {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let span = u32::from(last - first) + 1;
        // Test binaries run one after another: start each where the last is unlikely to be.
        let offset = std::process::id() % span;
        for _ in 0..span {
            let i = (NEXT.fetch_add(1, Ordering::Relaxed) + offset) % span;
            let p = first + i as u16;
            if TcpListener::bind(("127.0.0.1", p)).is_ok() {
                return p;
            }
        }
        panic!("no free port in MXSTACK_TEST_PORTS={first}-{last}");
    }
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc_geteuid() == 0 }
}

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

fn pg_bin() -> PathBuf {
    for v in ["15", "16", "17"] {
        let p = PathBuf::from(format!("/usr/lib/postgresql/{v}/bin"));
        if p.join("postgres").exists() {
            return p;
        }
    }
    panic!("PostgreSQL server binaries not found: run scripts/setup.sh (installs postgresql-15)");
}

/// PostgreSQL refuses to run as root: as root, run its programs as the `postgres` user (set
/// directly on the child, so the pid we hold is PostgreSQL's own and signals reach it).
fn pg_command(program: &str) -> Command {
    use std::os::unix::process::CommandExt;
    let mut c = Command::new(pg_bin().join(program));
    if is_root() {
        let id = |flag: &str| -> u32 {
            let out = Command::new("id")
                .args([flag, "postgres"])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .expect("postgres user")
        };
        c.uid(id("-u")).gid(id("-g")).current_dir("/tmp");
    }
    c
}

pub fn wait_port(port: u16, timeout: Duration) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < timeout, "port {port} did not open");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A PostgreSQL cluster with `wal_level=logical`, trust authentication on 127.0.0.1.
pub struct PgCluster {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

impl PgCluster {
    pub fn start() -> PgCluster {
        let dir = tempfile::Builder::new()
            .prefix("mxstack-li-test-pg-")
            .tempdir_in("/var/tmp")
            .unwrap();
        if is_root() {
            let ok = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap()
                .success();
            assert!(ok, "chown postgres");
        }
        let data = dir.path().join("data");
        let out = pg_command("initdb")
            .arg("-D")
            .arg(&data)
            .args([
                "--username=postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
            ])
            .stdout(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let mut cluster = PgCluster {
            port,
            dir,
            child: None,
        };
        cluster.spawn();
        cluster
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn spawn(&mut self) {
        let child = pg_command("postgres")
            .arg("-D")
            .arg(self.data())
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(self.dir.path())
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "wal_level=logical",
                "-c",
                "max_wal_senders=10",
                "-c",
                "max_replication_slots=10",
                "-c",
                "fsync=off",
                "-c",
                "wal_retrieve_retry_interval=500ms",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.dir.path().join("postgres.log"))
                    .unwrap(),
            ))
            .spawn()
            .unwrap();
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let start = Instant::now();
        loop {
            let ok = pg_command("pg_isready")
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q"])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "postgres did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stop (fast shutdown), e.g. to simulate an outage; `start_again` brings it back.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-INT", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }

    pub fn start_again(&mut self) {
        self.spawn();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    /// Run SQL with psql as the superuser, each `;`-separated statement on its own (so CREATE
    /// DATABASE works); panics with psql's message on error.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = pg_command("psql")
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                db,
            ])
            .args(
                sql.split(';')
                    .filter(|q| !q.trim().is_empty())
                    .flat_map(|q| ["-c", q]),
            )
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql failed: {}\n{sql}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn dsn(&self, user: &str, db: &str) -> String {
        format!("host=127.0.0.1 port={} user={user} dbname={db}", self.port)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // Immediate shutdown: the directory is removed next.
            let _ = Command::new("kill")
                .args(["-QUIT", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }
}

/// The project's virtualenv (scripts/setup.sh), for `weed`.
/// A program of the venv: MXSTACK_VENV's (as scripts/test.sh sets it), else the checkout's `.venv`.
pub fn venv_bin(name: &str) -> PathBuf {
    let venv = std::env::var_os("MXSTACK_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv"));
    let p = venv.join("bin").join(name);
    assert!(p.exists(), "{} missing: run scripts/setup.sh", p.display());
    p
}

/// A free port whose +10000 (SeaweedFS's gRPC port for it) is free too, distinct from `taken`.
pub fn free_port_pair(taken: &[u16]) -> u16 {
    for _ in 0..200 {
        let p = free_port();
        if p > 55535 || taken.contains(&p) || taken.contains(&(p + 10000)) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", p + 10000)).is_ok() {
            return p;
        }
    }
    panic!("no free port pair (p, p+10000)");
}

/// An S3 identity of SeaweedFS's `-s3.config` file. Actions may be bucket-scoped: `Read:media`.
pub struct S3Identity {
    pub name: &'static str,
    pub access_key: String,
    pub secret_key: String,
    pub actions: Vec<String>,
}

/// A SeaweedFS server (master, volume, filer, S3 gateway) with static S3 identities. Buckets are
/// created by the test (S3 CreateBucket as an identity with `Admin`).
pub struct Seaweed {
    pub s3_port: u16,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    /// master, volume, filer, s3 (HTTP ports; gRPC is each + 10000).
    ports: [u16; 4],
}

impl Seaweed {
    pub fn start(identities: &[S3Identity]) -> Seaweed {
        let dir = tempfile::Builder::new()
            .prefix("mxstack-li-test-s3-")
            .tempdir_in("/var/tmp")
            .unwrap();
        let ids: Vec<serde_json::Value> = identities
            .iter()
            .map(|i| {
                serde_json::json!({
                    "name": i.name,
                    "credentials": [{ "accessKey": i.access_key, "secretKey": i.secret_key }],
                    "actions": i.actions,
                })
            })
            .collect();
        let config = dir.path().join("s3.json");
        std::fs::write(
            &config,
            serde_json::json!({ "identities": ids }).to_string(),
        )
        .unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let mut ports = Vec::new();
        for _ in 0..4 {
            let p = free_port_pair(&ports);
            ports.push(p);
            ports.push(p + 10000);
        }
        let (master, volume, filer, s3) = (ports[0], ports[2], ports[4], ports[6]);
        let log = std::fs::File::create(dir.path().join("weed.log")).unwrap();
        let child = Command::new(venv_bin("weed"))
            .arg("server")
            .arg(format!("-dir={}", data.display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
            .arg(format!("-master.port={master}"))
            .arg(format!("-volume.port={volume}"))
            .args(["-volume.max=100", "-master.volumeSizeLimitMB=128", "-filer"])
            .arg(format!("-filer.port={filer}"))
            .arg("-s3")
            .arg(format!("-s3.port={s3}"))
            .arg(format!("-s3.config={}", config.display()))
            .arg("-s3.iam=false")
            // SeaweedFS 4.x also starts an Iceberg catalog (8181) and a Lance namespace (9101) by
            // default, fixed ports: off, so that several servers can run side by side.
            .args(["-s3.port.iceberg=0", "-s3.port.lance=0"])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        let server = Seaweed {
            s3_port: s3,
            dir,
            child: Some(child),
            ports: [master, volume, filer, s3],
        };
        wait_port(s3, Duration::from_secs(60));
        server
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("weed.log")).unwrap_or_default()
    }
}

impl Drop for Seaweed {
    fn drop(&mut self) {
        // Throwaway data: no graceful shutdown (weed takes over 5 s on SIGTERM).
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // The Unix sockets weed puts next to its ports in /tmp (it removes them only on a clean
        // shutdown).
        let [master, volume, filer, s3] = self.ports;
        let mut sockets = vec![
            format!("seaweedfs-filer-{filer}.sock"),
            format!("seaweedfs-s3-{s3}.sock"),
        ];
        for (role, port) in [
            ("master", master),
            ("volume", volume),
            ("filer", filer),
            ("s3", s3),
        ] {
            sockets.push(format!("seaweedfs-{role}-grpc-{}.sock", port + 10000));
        }
        for s in sockets {
            let _ = std::fs::remove_file(Path::new("/tmp").join(s));
        }
    }
}
