//! `mxstack backup now|list|export-secrets` and `mxstack restore`: the local stack's PostgreSQL
//! backed up with barman-cloud into the backup bucket (the layout CloudNativePG's Barman Cloud
//! plugin writes), restored to a point in time; for Kubernetes, the CloudNativePG recovery
//! Cluster printed from the same model. docs/BACKUP.md.

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use mxstack_local::backup::{self, Archive, BackupInfo, Cluster, RestoreTarget};
use mxstack_local::plan::Programs;
use mxstack_local::supervisor;
use mxstack_local::{LocalPlan, Service, StackStatus};
use mxstack_spec::{Config, Feature, Secrets};
use serde_json::json;

use crate::local::Target;

type CmdResult = Result<ExitCode, String>;

/// Everything a backup command needs about the local stack.
struct Local {
    config: Config,
    secrets: Secrets,
    plan: LocalPlan,
    barman_bin: PathBuf,
    replicas: u32,
    base_port: u16,
    root: PathBuf,
}

fn local(t: &Target) -> Result<Local, String> {
    let (config, secrets) = t.load()?;
    let shape = t.layout.shape().ok_or_else(|| {
        format!(
            "no stack was started with the state directory {} (no {}): start it with `mxstack up --config {}`",
            t.layout.root.display(),
            t.layout.up_args_file().display(),
            t.config.display()
        )
    })?;
    let programs = Programs::discover_for(&config)?;
    let plan = LocalPlan::build(&config, &secrets, &t.layout, &shape, &programs);
    Ok(Local {
        config,
        secrets,
        plan,
        barman_bin: programs.barman_bin,
        replicas: shape.replicas,
        base_port: shape.base_port,
        root: t.layout.root.clone(),
    })
}

impl Local {
    /// `--cluster main|li`, or every cluster the config runs.
    fn clusters(&self, only: Option<&str>) -> Result<Vec<Cluster>, String> {
        let all = Cluster::all(&self.config);
        let Some(name) = only else { return Ok(all) };
        let c = Cluster::parse(name).map_err(|e| e.to_string())?;
        if !all.contains(&c) {
            return Err("the LI cluster exists with feature `li` only".into());
        }
        Ok(vec![c])
    }

    fn archive(&self, c: Cluster) -> Archive {
        c.archive(&self.config, &self.plan.addressing, &self.barman_bin)
    }

    fn postgres(&self, c: Cluster) -> &Service {
        self.plan
            .service(c.service())
            .expect("the plan runs the cluster's postgres")
    }

    fn port(&self, c: Cluster) -> u16 {
        self.postgres(c).port.expect("postgres has a port")
    }

    /// Replaces every S3 credential in `text` (barman's own messages never carry them; this is
    /// the guarantee).
    fn scrub(&self, text: &str) -> String {
        [Cluster::Main, Cluster::Li]
            .iter()
            .flat_map(|c| c.credentials())
            .filter(|n| !self.secrets.get(*n).is_empty())
            .fold(text.to_string(), |t, n| {
                t.replace(self.secrets.get(n), "[redacted]")
            })
    }

    /// Runs a barman-cloud program with `c`'s S3 credentials in its environment (as `postgres`
    /// when it reads the data directory), returning its stdout.
    fn barman(
        &self,
        c: Cluster,
        program: &str,
        args: &[String],
        as_postgres: bool,
    ) -> Result<String, String> {
        let mut cmd = Command::new(self.archive(c).program(program));
        cmd.args(args)
            .envs(backup::credentials_env(c, &self.config, &self.secrets))
            .env("TZ", "UTC")
            .stdin(Stdio::null())
            .current_dir("/");
        if as_postgres {
            use std::os::unix::process::CommandExt;
            let (uid, gid) = mxstack_local::runtime::user_ids("postgres")
                .ok_or("system user `postgres` does not exist: run `mxstack setup`")?;
            cmd.uid(uid).gid(gid).env("HOME", &self.root);
        }
        let out = cmd.output().map_err(|e| {
            format!("cannot run {program}: {e} (install barman-cli-cloud: `mxstack setup`)")
        })?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = err.lines().rev().take(12).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(self.scrub(&format!(
                "{program} ({}) failed ({}):\n{}",
                c.name(),
                out.status,
                tail.join("\n")
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn list(&self, c: Cluster) -> Result<Vec<BackupInfo>, String> {
        let args = self.archive(c).list_args();
        let out = self.barman(c, "barman-cloud-backup-list", &args, false)?;
        backup::parse_backup_list(&out).map_err(|e| format!("{}: {e}", c.name()))
    }

    fn where_(&self, c: Cluster) -> String {
        let a = self.archive(c);
        format!("{} (server {})", a.url, a.server)
    }
}

/// A process `restore` started while the stack is down; stopped (SIGINT: PostgreSQL's fast
/// shutdown; SeaweedFS stops on it too) when dropped.
struct Started {
    child: Child,
}

impl Started {
    fn start(s: &Service, t: &Target, extra: &[String], log: &str) -> Result<Started, String> {
        let mut s = s.clone();
        s.args.extend(extra.iter().cloned());
        let child = supervisor::command(&s, &t.layout, &t.layout.log_file(log))?
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", s.name))?;
        Ok(Started { child })
    }

    fn stop(&mut self) {
        // SAFETY: our own child's process group.
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGINT);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        self.stop();
    }
}

fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(300)).is_ok()
}

/// SeaweedFS answering on the stack's S3 port: the running stack's, or one started here for
/// the duration (the stack is down).
fn ensure_s3(l: &Local, t: &Target) -> Result<Option<Started>, String> {
    let s = l
        .plan
        .service("seaweedfs")
        .expect("the plan runs seaweedfs");
    let port = s.port.expect("seaweedfs has a port");
    if port_open(port) {
        return Ok(None);
    }
    eprintln!("starting SeaweedFS (the backup bucket) on port {port} while the stack is down ...");
    let mut started = Started::start(s, t, &[], "seaweedfs")?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !port_open(port) {
        if Instant::now() > deadline {
            return Err(format!(
                "SeaweedFS did not answer on port {port} within 120s; see {}",
                t.layout.log_file("seaweedfs").display()
            ));
        }
        // Right after `down` a port of the stopped server can still be held for a moment
        // (SeaweedFS then exits at once): start it again, as the supervisor would.
        if let Ok(Some(_)) = started.child.try_wait() {
            std::thread::sleep(Duration::from_secs(2));
            started = Started::start(s, t, &[], "seaweedfs")?;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    Ok(Some(started))
}

fn print_json(v: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(v).expect("json"));
}

/// `mxstack backup now [--cluster main|li]`: a base backup of each cluster (main, and the LI
/// cluster with feature li), each to its own archive.
pub fn now(t: &Target, only: Option<&str>, json: bool) -> CmdResult {
    let l = local(t)?;
    let clusters = l.clusters(only)?;
    let ready = t.running_supervisor().is_some()
        && StackStatus::load(&t.layout.status_file()).is_some_and(|s| s.phase == "ready");
    if !ready {
        return Err(format!(
            "the local stack is not running: a base backup is taken of the running PostgreSQL; start it with `mxstack up --config {}`",
            t.config.display()
        ));
    }
    let start = Instant::now();
    let mut out = serde_json::Map::new();
    for c in clusters {
        let begun = Instant::now();
        eprintln!("backing up {} to {} ...", c.name(), l.where_(c));
        let archive = l.archive(c);
        let args = archive.backup_args(&t.layout.sockets(), l.port(c));
        l.barman(c, "barman-cloud-backup", &args, true)?;
        let list = l.list(c)?;
        let newest = list.iter().max_by_key(|b| b.begin).ok_or_else(|| {
            format!(
                "{}: the backup finished but the archive lists none",
                c.name()
            )
        })?;
        if !json {
            println!(
                "{}: backup {} {} in {}s: restorable from {}",
                c.name(),
                newest.id,
                newest.status,
                begun.elapsed().as_secs(),
                newest.end
            );
        }
        out.insert(
            cluster_key(c).into(),
            json!({ "archive": archive.url, "server": archive.server,
                    "backup": newest, "seconds": begun.elapsed().as_secs() }),
        );
    }
    if json {
        print_json(&json!({ "clusters": out, "seconds": start.elapsed().as_secs() }));
    }
    Ok(ExitCode::SUCCESS)
}

/// The key of a cluster in `--json` output: `main`, `li`.
fn cluster_key(c: Cluster) -> &'static str {
    match c {
        Cluster::Main => "main",
        Cluster::Li => "li",
    }
}

/// The oldest time a cluster's archive can restore to: the end of its oldest complete backup.
fn oldest_restorable(list: &[BackupInfo]) -> Option<Timestamp> {
    list.iter().find(|b| b.status == "DONE").map(|b| b.end)
}

/// `mxstack backup list [--cluster main|li]`: every cluster's backups and its oldest
/// restorable time.
pub fn list(t: &Target, only: Option<&str>, json: bool) -> CmdResult {
    let l = local(t)?;
    let clusters = l.clusters(only)?;
    let _s3 = ensure_s3(&l, t)?;
    let mut out = serde_json::Map::new();
    for c in clusters {
        let list = l.list(c)?;
        let oldest = oldest_restorable(&list);
        let archive = l.archive(c);
        out.insert(
            cluster_key(c).into(),
            json!({ "archive": archive.url, "server": archive.server,
                    "oldest_restorable": oldest, "backups": list }),
        );
        if !json {
            print_list(&l, c, &list, oldest);
        }
    }
    if json {
        print_json(&json!({ "clusters": out }));
    }
    Ok(ExitCode::SUCCESS)
}

fn print_list(l: &Local, c: Cluster, list: &[BackupInfo], oldest: Option<Timestamp>) {
    println!("{}: archive {}", c.name(), l.where_(c));
    println!(
        "{:<18} {:<8} {:>3} {:<27} {:<27}",
        "backup", "status", "tl", "begin", "restorable from"
    );
    for b in list {
        let tl = b.timeline.map(|x| x.to_string()).unwrap_or_default();
        println!(
            "{:<18} {:<8} {:>3} {:<27} {:<27}",
            b.id,
            b.status,
            tl,
            b.begin.to_string(),
            b.end.to_string()
        );
    }
    match oldest {
        Some(o) => println!(
            "{}: oldest restorable time: {o}; newest: the end of the WAL archive\n",
            c.name()
        ),
        None => println!(
            "{}: no complete backup: take one with `mxstack backup now`\n",
            c.name()
        ),
    }
}

/// What `restore` does to one cluster: the backup it starts from and the target it replays to.
struct Plan {
    cluster: Cluster,
    backup: BackupInfo,
    target: RestoreTarget,
}

/// The target of each cluster: main's is `--to`; the LI cluster is always restored to the end of
/// its archive (the most evidence it holds; `li reattach` then keeps in history what a rewound
/// main no longer has). Checked against every archive before anything stops: a refusal names
/// each cluster's oldest restorable time.
fn restore_plans(
    l: &Local,
    clusters: &[Cluster],
    target: RestoreTarget,
) -> Result<Vec<Plan>, String> {
    if clusters == [Cluster::Li] && target != RestoreTarget::Latest {
        return Err("the LI cluster is restored to the end of its archive only (it keeps the most evidence there): give `--to latest`".into());
    }
    let mut plans = Vec::new();
    let mut refused = Vec::new();
    let mut oldest = Vec::new();
    for &c in clusters {
        let list = l.list(c)?;
        let want = if c == Cluster::Li {
            RestoreTarget::Latest
        } else {
            target
        };
        oldest.push(match oldest_restorable(&list) {
            Some(o) => format!("{}: {o}", c.name()),
            None => format!("{}: none (no complete backup)", c.name()),
        });
        match backup::choose_backup(&list, want, Timestamp::now(), &l.where_(c)) {
            Ok(b) => plans.push(Plan {
                cluster: c,
                backup: b.clone(),
                target: want,
            }),
            Err(e) => refused.push(format!("{}: {e}", c.name())),
        }
    }
    if refused.is_empty() {
        return Ok(plans);
    }
    Err(format!(
        "{}\noldest restorable time of each cluster: {}; nothing was stopped",
        refused.join("\n"),
        oldest.join(", ")
    ))
}

/// `mxstack restore --to TARGET [--cluster main|li]`: checks the target against every archive
/// before anything stops, stops the stack (data kept), moves each restored cluster's data
/// directory aside (never deleted), restores the chosen base backups, replays the archived WAL
/// (main to the target, LI to its end), re-attaches LI's subscription to main (feature li) and
/// starts the stack again.
pub fn restore(t: &Target, to: &str, only: Option<&str>, json: bool) -> CmdResult {
    let target = RestoreTarget::parse(to).map_err(|e| e.to_string())?;
    let l = local(t)?;
    let clusters = l.clusters(only)?;
    let started = Instant::now();
    let s3 = ensure_s3(&l, t)?;
    let plans = restore_plans(&l, &clusters, target)?;
    for p in &plans {
        eprintln!(
            "restoring {} {} from backup {} (consistent from {}) ...",
            p.cluster.name(),
            describe(p.target),
            p.backup.id,
            p.backup.end
        );
    }
    drop(s3);
    if crate::local::stop(t)? {
        eprintln!("stopped the stack (data kept)");
    }
    let s3 = ensure_s3(&l, t)?;
    let mut results = serde_json::Map::new();
    let mut running = Vec::new();
    for p in &plans {
        let (pg, result) = restore_cluster(&l, t, p)?;
        running.push(pg);
        results.insert(cluster_key(p.cluster).into(), result);
    }
    let reattach = reattach_li(&l, t, &mut running)?;
    drop(running);
    drop(s3);
    eprintln!("recovered; starting the stack ...");
    let code = crate::local::up(t, l.replicas, l.base_port, false, json, false)?;
    if code != ExitCode::SUCCESS {
        return Ok(code);
    }
    report(json, target, &results, reattach.as_ref(), started);
    Ok(ExitCode::SUCCESS)
}

/// One cluster: its data directory moved aside, the base backup downloaded, the WAL replayed to
/// the plan's target. Returns the promoted server, still running (LI's without apply workers,
/// so nothing replicates before the re-attach), and what to report.
fn restore_cluster(
    l: &Local,
    t: &Target,
    p: &Plan,
) -> Result<(Started, serde_json::Value), String> {
    let c = p.cluster;
    let data = c.data_dir(&t.layout);
    let aside = move_aside(&data)?;
    let undo = |e: String| {
        match &aside {
        Some(a) => format!(
            "{e}\nnothing was deleted: {}'s data directory before the restore is {}; to go back, remove {} and move it there",
            c.name(),
            a.display(),
            data.display()
        ),
        None => e,
    }
    };
    eprintln!(
        "downloading backup {} of {} into {} ...",
        p.backup.id,
        c.name(),
        data.display()
    );
    let args = l.archive(c).restore_args(&p.backup.id, &data);
    l.barman(c, "barman-cloud-restore", &args, true)
        .map_err(undo)?;
    let (pg, last) = recover(l, t, c, p.target).map_err(undo)?;
    let to = match p.target {
        RestoreTarget::Latest => "latest".to_string(),
        RestoreTarget::Time(t) => t.to_string(),
    };
    Ok((
        pg,
        json!({ "backup": p.backup, "target": to, "last_transaction": last,
                "previous_data": aside }),
    ))
}

/// With feature li: both clusters running (the ones not restored are started here, LI without
/// apply workers), the subscription re-attached to main while nothing writes to it.
fn reattach_li(
    l: &Local,
    t: &Target,
    running: &mut Vec<Started>,
) -> Result<Option<serde_json::Value>, String> {
    if !l.config.features.contains(&Feature::Li) {
        return Ok(None);
    }
    let restored = running.len();
    for c in [Cluster::Main, Cluster::Li] {
        if !port_open(l.port(c)) {
            running.push(start_postgres(l, t, c, &[])?);
        }
    }
    eprintln!(
        "re-attaching the LI subscription to main ({} cluster(s) restored) ...",
        restored
    );
    let li = crate::li::LiTarget {
        config: Some(t.config.clone()),
        state: Some(t.layout.root.clone()),
        secrets: Some(t.secrets.clone()),
        li_sync_config: None,
    };
    let report = mxstack_li_sync::reattach(&li.load()?)
        .map_err(|e| format!("re-attaching the LI subscription failed: {e}\nthe restored data is in place and the stack is not started; `mxstack restore --config {} --cluster li --to latest` restores the LI cluster again (its current directory is moved aside) and re-attaches it, main kept as it is", t.config.display()))?;
    Ok(Some(serde_json::to_value(report).expect("json")))
}

/// A cluster's PostgreSQL started outside the supervisor (the stack is down), waited for until
/// it accepts connections out of recovery. LI's never runs apply workers here.
fn start_postgres(l: &Local, t: &Target, c: Cluster, extra: &[String]) -> Result<Started, String> {
    let mut args = extra.to_vec();
    if c == Cluster::Li {
        args.extend(["-c".into(), "max_logical_replication_workers=0".into()]);
    }
    let log = format!("{}-restore", c.service());
    let mut pg = Started::start(l.postgres(c), t, &args, &log)?;
    let begun = Instant::now();
    let mut shown = 0;
    loop {
        if let Ok(Some(status)) = pg.child.try_wait() {
            let path = t.layout.log_file(&log);
            return Err(format!(
                "{} stopped ({status}):\n{}\n(log: {})",
                c.name(),
                tail(&path, 8),
                path.display()
            ));
        }
        if in_recovery(t, l.port(c)) == Some(false) {
            return Ok(pg);
        }
        if begun.elapsed() > Duration::from_secs(1800) {
            return Err(format!(
                "{} did not finish recovery within 30 minutes; see {}",
                c.name(),
                t.layout.log_file(&log).display()
            ));
        }
        if begun.elapsed().as_secs() / 15 > shown {
            shown = begun.elapsed().as_secs() / 15;
            eprintln!("  {} still replaying ({}s)", c.name(), shown * 15);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn describe(target: RestoreTarget) -> String {
    match target {
        RestoreTarget::Latest => "to everything archived (latest)".into(),
        RestoreTarget::Time(t) => format!("to {t}"),
    }
}

fn report(
    json: bool,
    target: RestoreTarget,
    results: &serde_json::Map<String, serde_json::Value>,
    reattach: Option<&serde_json::Value>,
    started: Instant,
) {
    let to = match target {
        RestoreTarget::Latest => "latest".to_string(),
        RestoreTarget::Time(t) => t.to_string(),
    };
    if json {
        print_json(
            &json!({ "restored": true, "target": to, "clusters": results,
                            "li_reattach": reattach, "seconds": started.elapsed().as_secs() }),
        );
        return;
    }
    println!("restored in {}s", started.elapsed().as_secs());
    for (name, r) in results {
        println!(
            "{name}: to {} from backup {}; last replayed transaction: {}",
            r["target"].as_str().unwrap_or_default(),
            r["backup"]["id"].as_str().unwrap_or_default(),
            r["last_transaction"]
                .as_str()
                .unwrap_or("(none after the backup)")
        );
        if let Some(a) = r["previous_data"].as_str() {
            println!("{name}: the data directory before the restore is kept at {a}: delete it once the restored stack is checked");
        }
    }
    if let Some(r) = reattach.filter(|r| !r.is_null()) {
        println!(
            "li: subscription resumes from {}; {} rows main no longer has kept in history (REMOVED)",
            r["slot_lsn"].as_str().unwrap_or_default(),
            r["history_rows"]
        );
    }
}

/// Renames the data directory to `<name>.before-restore-<UTC time>`; None when there is none
/// (the disk was lost).
fn move_aside(data: &Path) -> Result<Option<PathBuf>, String> {
    if !data.exists() {
        return Ok(None);
    }
    let stamp = Timestamp::now().strftime("%Y%m%dT%H%M%SZ").to_string();
    let name = data
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "data".into());
    let aside = data.with_file_name(format!("{name}.before-restore-{stamp}"));
    std::fs::rename(data, &aside).map_err(|e| {
        format!(
            "cannot move {} aside to {}: {e}",
            data.display(),
            aside.display()
        )
    })?;
    eprintln!(
        "moved the current data directory aside to {}",
        aside.display()
    );
    Ok(Some(aside))
}

/// Starts the restored PostgreSQL in recovery (restore_command from the archive, the target,
/// promote) and waits until it has promoted. Returns it, still running, and PostgreSQL's line
/// naming the last transaction it replayed.
fn recover(
    l: &Local,
    t: &Target,
    c: Cluster,
    target: RestoreTarget,
) -> Result<(Started, Option<String>), String> {
    let data = c.data_dir(&t.layout);
    prepare_data_dir(&data)?;
    let mut extra = Vec::new();
    for s in target.recovery_settings(&l.archive(c)) {
        extra.push("-c".to_string());
        extra.push(s);
    }
    let log = t.layout.log_file(&format!("{}-restore", c.service()));
    let _ = std::fs::remove_file(&log);
    eprintln!(
        "replaying {}'s archived WAL {} ...",
        c.name(),
        describe(target)
    );
    let pg = start_postgres(l, t, c, &extra)?;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let last = text
        .lines()
        .rev()
        .find(|l| l.contains("recovery stopping") || l.contains("last completed transaction"))
        .map(|l| l.split("LOG:").last().unwrap_or(l).trim().to_string());
    Ok((pg, last))
}

/// PostgreSQL's requirements on a restored directory: owned by `postgres`, mode 0700, and
/// `recovery.signal` so it starts in targeted recovery.
fn prepare_data_dir(data: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(data, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("cannot set the mode of {}: {e}", data.display()))?;
    let signal = data.join("recovery.signal");
    std::fs::write(&signal, b"").map_err(|e| format!("cannot write {}: {e}", signal.display()))?;
    if let Some((uid, gid)) = mxstack_local::runtime::user_ids("postgres") {
        std::os::unix::fs::chown(&signal, Some(uid), Some(gid)).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// `SELECT pg_is_in_recovery()` over the local socket as `postgres`; None while it does not
/// answer yet.
fn in_recovery(t: &Target, port: u16) -> Option<bool> {
    use std::os::unix::process::CommandExt;
    let (uid, gid) = mxstack_local::runtime::user_ids("postgres")?;
    let pg_bin = ["15", "16", "17"]
        .iter()
        .map(|v| PathBuf::from(format!("/usr/lib/postgresql/{v}/bin/psql")))
        .find(|p| p.exists())?;
    let out = Command::new(pg_bin)
        .args(["-X", "-tA", "-h"])
        .arg(t.layout.sockets())
        .args(["-p", &port.to_string(), "-U", "postgres", "-d", "postgres"])
        .args(["-c", "SELECT pg_is_in_recovery()"])
        .uid(uid)
        .gid(gid)
        .current_dir("/")
        .stderr(Stdio::null())
        .output()
        .ok()?;
    match String::from_utf8_lossy(&out.stdout).trim() {
        "t" => Some(true),
        "f" => Some(false),
        _ => None,
    }
}

fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `mxstack restore --kubernetes`: the CloudNativePG recovery of main (to the target) and,
/// with feature li, of the LI cluster (to the end of its archive), as YAML documents.
pub fn kubernetes(t: &Target, to: &str, name: &str, li_name: &str) -> CmdResult {
    let target = RestoreTarget::parse(to).map_err(|e| e.to_string())?;
    let (config, secrets) = t.load()?;
    let topology = mxstack_topology::Topology::build(&config);
    let time = match target {
        RestoreTarget::Latest => None,
        RestoreTarget::Time(t) => Some(t.to_string()),
    };
    let main = mxstack_k8s::postgres_recovery(&topology, &secrets, name, time.as_deref());
    let li = mxstack_k8s::li_postgres_recovery(&topology, &secrets, li_name);
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "# CloudNativePG recovery of {} into the new cluster `{name}` ({}).",
        mxstack_topology::registry::postgres::CLUSTER,
        describe(target)
    );
    if !li.is_empty() {
        let _ = writeln!(
            out,
            "# And of {} into `{li_name}` (to the end of its archive: the LI side keeps the most evidence).",
            mxstack_topology::registry::li_postgres::CLUSTER
        );
    }
    let _ = writeln!(
        out,
        "# Apply the Clusters and ScheduledBackups, wait until they are Ready, then follow docs/BACKUP.md\n# (scale Synapse to 0, delete the old Clusters, apply the Services{}, scale Synapse up).",
        if li.is_empty() { "" } else { ", `mxstack li reattach` in the li-sync pod" }
    );
    for o in main.iter().chain(&li) {
        let _ = writeln!(
            out,
            "---\n{}",
            serde_saphyr::to_string(o).map_err(|e| e.to_string())?
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `mxstack backup export-secrets`: secrets.yaml (the signing key and every generated secret)
/// encrypted with age to the operator's recipients, for offline storage. Nothing of it is printed.
pub fn export_secrets(
    t: &Target,
    recipients: &[String],
    out: &Path,
    force: bool,
    json: bool,
) -> CmdResult {
    let parsed = recipients
        .iter()
        .map(|r| {
            r.trim().parse::<age::x25519::Recipient>().map_err(|_| {
                format!("`{r}` is not an age recipient (age1...): make a key pair with `age-keygen -o key.txt` and pass its public key")
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    if parsed.is_empty() {
        return Err("give at least one --recipient age1...".into());
    }
    if out.exists() && !force {
        return Err(format!(
            "{} exists: choose another --out, or --force to replace it",
            out.display()
        ));
    }
    let plain = std::fs::read(&t.secrets)
        .map_err(|e| format!("cannot read {}: {e}", t.secrets.display()))?;
    // Parsing first: an export of a file that does not load would restore nothing.
    Secrets::load(&t.secrets).map_err(|e| e.to_string())?;
    let sealed = mxstack_key_vault::crypto::seal(&parsed, &plain)?;
    crate::commands::write_atomic(out, sealed.as_bytes(), 0o600)
        .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    let sha = mxstack_key_vault::crypto::fingerprint(&sealed);
    if json {
        print_json(
            &json!({ "out": out, "recipients": recipients, "sha256": sha,
                            "source": t.secrets }),
        );
    } else {
        println!(
            "wrote {} (age, {} recipient(s), sha256 {sha}): store it offline; decrypt with `age -d -i KEY {}`",
            out.display(),
            parsed.len(),
            out.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
