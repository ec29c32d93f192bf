//! `mxstack li ...`: the lawful-intercept data path (crates/li-sync).
//!
//! Every command takes either `--config mxstack.yaml` (a stack started by `mxstack up`: li-sync's
//! config file and credentials come from its state directory and secrets.yaml) or
//! `--li-sync-config FILE` (inside a pod, where the credentials are in the environment).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use mxstack_li_sync::config::LiSyncConfig;
use mxstack_li_sync::status::LiStatus;
use mxstack_spec::{SecretName, Secrets};
use mxstack_topology::li;

use crate::local::Target;

type CmdResult = Result<ExitCode, String>;

/// Where li-sync's config and credentials come from.
pub struct LiTarget {
    pub config: Option<PathBuf>,
    pub state: Option<PathBuf>,
    pub secrets: Option<PathBuf>,
    pub li_sync_config: Option<PathBuf>,
}

impl LiTarget {
    pub(crate) fn load(&self) -> Result<LiSyncConfig, String> {
        if let Some(path) = &self.li_sync_config {
            return LiSyncConfig::load(path).map_err(|e| e.0);
        }
        let Some(config) = &self.config else {
            return Err(
                "give --config mxstack.yaml (a local stack) or --li-sync-config FILE (in a pod)"
                    .into(),
            );
        };
        let t = Target::new(config, self.state.as_deref(), self.secrets.as_deref());
        let path = t.layout.root.join("li-sync/li-sync.yaml");
        if !path.exists() {
            return Err(format!(
                "{} does not exist: is feature `li` on and the stack started with `mxstack up --config {}`?",
                path.display(),
                config.display()
            ));
        }
        let secrets = Secrets::load(&t.secrets).map_err(|e| e.to_string())?;
        for (env, name) in [
            (li::ENV_MAIN_PASSWORD, SecretName::LiReplicationPassword),
            (li::ENV_LI_PASSWORD, SecretName::LiDbPassword),
            (li::ENV_S3_ACCESS_KEY, SecretName::LiS3AccessKey),
            (li::ENV_S3_SECRET_KEY, SecretName::LiS3SecretKey),
        ] {
            // Single-threaded here: no other thread reads the environment yet.
            std::env::set_var(env, secrets.get(name));
        }
        LiSyncConfig::load(&path).map_err(|e| e.0)
    }
}

fn mib(bytes: i64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// Problems that make the replica untrustworthy right now (empty = healthy).
pub fn problems(s: &LiStatus) -> Vec<String> {
    let mut p = Vec::new();
    if s.mode == "logical" {
        if !s.subscribed {
            p.push("no subscription yet (li-sync creates it after copying the schema)".into());
        } else if s.slot_missing {
            p.push(
                "main has no replication slot for the subscription: main was restored from a \
                 backup (slots are in none); with nothing writing to main, run `mxstack li \
                 reattach` (docs/BACKUP.md)"
                    .into(),
            );
        } else if !s.subscription_enabled {
            p.push(
                "the subscription is disabled: nothing from main reaches the replica; li-sync \
                 resumes it at its next schema check (`mxstack logs li-sync` says why it cannot), \
                 or now with `mxstack li upgrade-schema`"
                    .into(),
            );
        } else if !s.apply_worker_running {
            p.push("the apply worker is not running (see the LI PostgreSQL log)".into());
        }
        match s.initial_copy_stalled() {
            Some(cause) => p.push(format!(
                "the initial copy of {} tables is not progressing: {cause}",
                s.tables_syncing.len()
            )),
            None if !s.tables_syncing.is_empty() => p.push(format!(
                "{} tables in their initial copy ({} copying now)",
                s.tables_syncing.len(),
                s.table_sync_workers
            )),
            None => {}
        }
        if s.schema_behind {
            p.push("main has schema the replica lacks (li-sync applies it; or run `mxstack li upgrade-schema`)".into());
        }
        if s.lag_seconds.is_some_and(|l| l > 5.0) {
            p.push(format!("lag {:.1} s", s.lag_seconds.unwrap_or(0.0)));
        }
    }
    if s.mode == "dump" {
        match &s.last_dump {
            None => p.push("no dump run yet (`mxstack li dump`, or wait for the schedule)".into()),
            Some(d) if d.status == "failed" => p.push(format!(
                "the last dump run failed: {}",
                d.error.as_deref().unwrap_or("no reason recorded")
            )),
            Some(d) if d.last_success_unix.is_none() => {
                p.push("no dump run has succeeded yet".into())
            }
            Some(_) => {}
        }
    }
    if let Some(w) = &s.last_working_copy {
        if w.status == "failed" {
            p.push(format!(
                "the last working-copy refresh failed: {}",
                w.error.as_deref().unwrap_or("no reason recorded")
            ));
        }
    }
    if !s.tables_without_identity.is_empty() {
        p.push(format!(
            "tables on main without replica identity (UPDATE/DELETE on them fail): {}",
            s.tables_without_identity.join(", ")
        ));
    }
    p
}

pub fn status(t: &LiTarget, json: bool) -> CmdResult {
    let config = t.load()?;
    let s = mxstack_li_sync::status(&config, true)?;
    let problems = problems(&s);
    if json {
        let mut v = serde_json::to_value(&s).expect("status");
        v["healthy"] = problems.is_empty().into();
        v["problems"] = problems.clone().into();
        println!("{}", serde_json::to_string_pretty(&v).expect("json"));
    } else {
        println!("LI replica ({} mode)", s.mode);
        if s.mode == "logical" {
            println!(
                "subscription: {}",
                match (s.subscribed, s.subscription_enabled, s.apply_worker_running) {
                    (false, _, _) => "not created",
                    (true, false, _) => "disabled",
                    (true, true, false) => "enabled, apply worker not running",
                    (true, true, true) => "enabled, apply worker running",
                }
            );
            println!(
                "lag: {} s, {} behind; slot retains {} on main (slot {})",
                s.lag_seconds
                    .map(|l| format!("{l:.2}"))
                    .unwrap_or_else(|| "unknown".into()),
                s.lag_bytes.map(mib).unwrap_or_else(|| "-".into()),
                s.slot_retained_bytes.map(mib).unwrap_or_else(|| "-".into()),
                if s.slot_active { "active" } else { "inactive" }
            );
            println!(
                "apply errors: {}, initial-copy errors: {}, tables in initial copy: {}",
                s.apply_errors,
                s.sync_errors,
                s.tables_syncing.len()
            );
            println!(
                "schema: {}; {} upgrades applied",
                if s.schema_behind {
                    "behind main"
                } else {
                    "in step with main"
                },
                s.schema_upgrades
            );
        }
        println!("history: {} rows kept", s.history_rows);
        for (what, r) in [
            ("dump", &s.last_dump),
            ("working copy", &s.last_working_copy),
        ] {
            if let Some(r) = r {
                println!(
                    "{what}: last run {} (started unix {:.0}){}; last success {}; {} runs, {} failed",
                    r.status,
                    r.started_at_unix,
                    r.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default(),
                    r.last_success_unix
                        .map(|t| format!("at unix {t:.0}"))
                        .unwrap_or_else(|| "never".into()),
                    r.total_runs,
                    r.failed_runs
                );
            }
        }
        match &s.media {
            Some(m) => println!(
                "media: last pass at unix {:.0}: {} listed, {} copied, {} errors, {} left",
                m.finished_at_unix, m.listed, m.copied, m.errors, m.backlog
            ),
            None => println!("media: no pass yet"),
        }
        println!("{:<26} {:>12} {:>12}", "table", "main", "replica");
        for c in &s.counts {
            let mark = if c.main == c.replica {
                ""
            } else {
                "  (differs)"
            };
            println!("{:<26} {:>12} {:>12}{mark}", c.table, c.main, c.replica);
        }
        if problems.is_empty() {
            println!("healthy");
        } else {
            for p in &problems {
                println!("problem: {p}");
            }
        }
    }
    Ok(if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

/// `mxstack li reattach`: the subscription attached again to a restored main.
pub fn reattach(t: &LiTarget, json: bool) -> CmdResult {
    let config = t.load()?;
    let r = mxstack_li_sync::reattach(&config)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r).expect("json"));
        return Ok(ExitCode::SUCCESS);
    }
    match r {
        None => println!("no subscription on the LI side: nothing to re-attach (li-sync subscribes when it starts)"),
        Some(r) => println!(
            "subscription {} resumes from {} (slot {}); {} rows copied from main, {} rows the LI side had and main no longer has kept in history (REMOVED)",
            r.subscription,
            r.slot_lsn,
            if r.replaced_slot { "replaced" } else { "created" },
            r.figures.rows_copied,
            r.figures.history_rows
        ),
    }
    Ok(ExitCode::SUCCESS)
}

pub fn upgrade_schema(t: &LiTarget, json: bool) -> CmdResult {
    let config = t.load()?;
    let r = mxstack_li_sync::upgrade_schema(&config)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r).expect("json"));
    } else {
        println!(
            "replica in step with main: {} new tables{}, {} statements applied, {} history triggers added, publication {}",
            r.new_tables.len(),
            if r.new_tables.is_empty() {
                String::new()
            } else {
                format!(" ({})", r.new_tables.join(", "))
            },
            r.statements.len(),
            r.history_triggers_added,
            if r.refreshed { "refreshed" } else { "unchanged" }
        );
        for n in &r.not_applied {
            println!("not applied (needs an operator): {n}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_run(
    json: bool,
    value: &impl serde::Serialize,
    what: &str,
    f: &mxstack_li_sync::bulk::RunFigures,
    seconds: f64,
) {
    if json {
        println!("{}", serde_json::to_string_pretty(value).expect("json"));
    } else {
        println!(
            "{what} in {seconds:.1} s: {} tables ({} replaced), {} rows, {}, {} rows kept in history",
            f.tables,
            f.tables_changed,
            f.rows_copied,
            mib(f.bytes_copied),
            f.history_rows
        );
    }
}

pub fn dump(t: &LiTarget, json: bool) -> CmdResult {
    let config = t.load()?;
    let r = mxstack_li_sync::dump(&config)?;
    print_run(
        json,
        &r,
        &format!("dump run {} committed", r.run_id),
        &r.figures,
        r.seconds,
    );
    Ok(ExitCode::SUCCESS)
}

/// A local stack's Synapse LI caches what it read: stop it so the supervisor starts it again on
/// the refreshed copy, and wait until it is ready. Returns its new pid; `None` where there is no
/// local Synapse LI to restart (`--li-sync-config` in a pod: the Kubernetes job restarts the
/// Deployment).
fn restart_local_synapse_li(t: &LiTarget) -> Result<Option<u32>, String> {
    use mxstack_local::plan::SYNAPSE_LI;
    use mxstack_local::status::{ProcessState, StackStatus};
    let (Some(config), None) = (&t.config, &t.li_sync_config) else {
        return Ok(None);
    };
    let target = Target::new(config, t.state.as_deref(), t.secrets.as_deref());
    let status_file = target.layout.status_file();
    let find = || {
        StackStatus::load(&status_file)
            .and_then(|s| s.processes.into_iter().find(|p| p.name == SYNAPSE_LI))
    };
    let Some(old) = find().and_then(|p| p.pid) else {
        return Ok(None);
    };
    // SAFETY: kill has no memory preconditions; the pid is the supervisor's child.
    unsafe { libc::kill(old as i32, libc::SIGTERM) };
    let start = std::time::Instant::now();
    loop {
        std::thread::sleep(std::time::Duration::from_millis(500));
        if let Some(p) = find() {
            if p.pid.is_some_and(|n| n != old) && matches!(p.state, ProcessState::Ready) {
                return Ok(p.pid);
            }
        }
        if start.elapsed() > std::time::Duration::from_secs(180) {
            return Err(format!(
                "the working copy is refreshed, but {SYNAPSE_LI} was not ready again within 180 s: see `mxstack logs --config {} {SYNAPSE_LI}`",
                config.display()
            ));
        }
    }
}

pub fn refresh_working_copy(t: &LiTarget, json: bool) -> CmdResult {
    let config = t.load()?;
    let r = mxstack_li_sync::refresh_working_copy(&config)?;
    let restarted = restart_local_synapse_li(t)?;
    if json {
        let mut v = serde_json::to_value(&r).expect("json");
        v["synapse_li_restarted_pid"] = restarted.into();
        println!("{}", serde_json::to_string_pretty(&v).expect("json"));
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(pid) = restarted {
        println!("synapse-li restarted on the refreshed copy (pid {pid})");
    }
    print_run(
        json,
        &r,
        &format!(
            "working copy refreshed (run {}, {} main session tokens removed, {} sequences set)",
            r.run_id, r.credentials_removed, r.sequences_set
        ),
        &r.figures,
        r.seconds,
    );
    Ok(ExitCode::SUCCESS)
}

pub fn prepare_main(li_sync_config: &Path) -> CmdResult {
    let config = LiSyncConfig::load(li_sync_config).map_err(|e| e.0)?;
    mxstack_li_sync::prepare_main(&config, mxstack_topology::synapse::DATABASE_USER)?;
    println!(
        "main prepared: replica identities set, event trigger installed, role {} can replicate and read, publication {} exists",
        config.main.user, config.subscription.publication
    );
    Ok(ExitCode::SUCCESS)
}

/// `mxstack li vault-keygen`: a new age X25519 key pair for the key vault. The text form is an
/// age identity file (what `age-keygen` writes), usable as is with `age -d -i FILE`.
pub fn vault_keygen(json: bool) -> CmdResult {
    let (public, private) = mxstack_key_vault::keygen();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "public_key": public,
                "private_key": private,
            }))
            .expect("json")
        );
    } else {
        let created = mxstack_key_vault::server::rfc3339(mxstack_key_vault::server::now_ms());
        println!("# created: {created}\n# public key: {public}\n{private}");
        eprintln!(
            "public key (recipients.vault or recipients.break_glass in the key vault's config): {public}\n\
             the private key goes only into the LI console's Secret (or offline, for break-glass); never to the vault"
        );
    }
    Ok(ExitCode::SUCCESS)
}
