//! `mxstack upgrade --synapse VERSION`: the plan (always) and, with `--apply`, the upgrade of a
//! local stack. Synapse's own procedure for a schema-changing release: stop every worker, let
//! main migrate the database once, then start the workers. Nothing stops before the plan holds:
//! the new version is installed, every process's config loads in it, and the database's schema
//! is one it can run on.

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use mxstack_local::plan::Programs;
use mxstack_local::synapse_version::{self as sv, SynapseBuild};
use mxstack_local::{LocalPlan, StackStatus};
use mxstack_spec::{Config, SecretName, Secrets};
use serde_json::{json, Value};

use crate::local::Target;
use mxstack_topology::Addressing;

type CmdResult = Result<ExitCode, String>;

pub const NOTES: &str = "https://element-hq.github.io/synapse/latest/upgrade.html";

/// The database's schema version and compat version, as Synapse records them.
fn db_schema(
    programs: &Programs,
    secrets: &Secrets,
    plan: &LocalPlan,
) -> Result<(u32, u32), String> {
    let pg = plan.addressing.postgres();
    let query = "SELECT (SELECT version FROM schema_version), (SELECT compat_version FROM schema_compat_version)";
    let out = Command::new(programs.pg_bin.join("psql"))
        .args([
            "-X",
            "-At",
            "-F",
            " ",
            "-h",
            &pg.host,
            "-p",
            &pg.port.to_string(),
        ])
        .args([
            "-U",
            mxstack_topology::synapse::DATABASE_USER,
            "-d",
            mxstack_topology::synapse::DATABASE_NAME,
            "-c",
            query,
        ])
        // The password by environment, never on a command line.
        .env("PGPASSWORD", secrets.get(SecretName::SynapseDbPassword))
        .output()
        .map_err(|e| format!("psql: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let f: Vec<u32> = text
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    match f.as_slice() {
        [v, c] if out.status.success() => Ok((*v, *c)),
        _ => Err(format!(
            "cannot read the database's schema version: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

/// The Synapse processes of the plan (main, workers, Synapse LI: `python -m synapse.app.…`), in
/// start order.
fn synapse_processes(plan: &LocalPlan) -> Vec<&mxstack_local::Service> {
    plan.start_order()
        .into_iter()
        .filter(|s| s.args.iter().any(|a| a.starts_with("synapse.app.")))
        .collect()
}

/// Every Synapse process's `--config-path` files, loaded by `python` (`synapse.config`).
pub fn prove(python: &std::path::Path, plan: &LocalPlan) -> Result<Vec<(String, String)>, String> {
    let synapse = synapse_processes(plan);
    let sets: Vec<(String, Vec<String>)> = synapse
        .iter()
        .map(|s| {
            let paths = s
                .args
                .windows(2)
                .filter(|w| w[0] == "--config-path")
                .map(|w| w[1].clone())
                .collect();
            (s.name.clone(), paths)
        })
        .collect();
    // Synapse's own environment: the modules' PYTHONPATH and the settings it reads from it.
    let env = synapse.first().map(|s| s.env.clone()).unwrap_or_default();
    let mut child = Command::new(python)
        .envs(env)
        .args(["-c", sv::CONFIG_PROOF])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", python.display()))?;
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(json!(sets).to_string().as_bytes())
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    serde_json::from_slice(&out.stdout).map_err(|_| {
        format!(
            "the config proof did not run: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })
}

/// Synapse's own compatibility rule: a process of `current` keeps working on a database that
/// `target`'s main has migrated while `target`'s compat schema is not above `current`'s schema.
/// Then the processes can be replaced one at a time; otherwise every one must stop first.
pub fn rolling_possible(current: &SynapseBuild, target: &SynapseBuild) -> bool {
    target.compat <= current.schema && target.schema >= current.schema
}

/// Why an upgrade from `db` (schema, compat) to `target` must not run, if it must not.
pub fn refusal(db: (u32, u32), target: &SynapseBuild) -> Option<String> {
    let (schema, compat) = db;
    (compat > target.schema).then(|| {
        format!(
            "the database is at schema {schema} and readable only by Synapse with schema {compat} or newer; Synapse {} has schema {}: it cannot run on it (restore a backup taken before the upgrade to go back)",
            target.version, target.schema
        )
    })
}

/// `coordinated`: stop every Synapse process before any starts even when a rolling restart
/// would do (`--coordinated`).
pub fn upgrade(t: &Target, version: &str, apply: bool, coordinated: bool, json: bool) -> CmdResult {
    sv::check_version(version).map_err(|e| e.to_string())?;
    let (config, secrets) = t.load()?;
    let status = StackStatus::load(&t.layout.status_file())
        .filter(|s| s.phase == "ready" && t.running_supervisor().is_some());
    let Some(shape) = status.and_then(|_| t.layout.shape()) else {
        if apply && !t.layout.postgres_data().exists() {
            return pin_fresh(t, &config, version, json);
        }
        return Err(format!("no running local stack for {}: start it with `mxstack up` (its configs and database are what the plan checks)", t.config.display()));
    };
    let programs = Programs::for_stack(&config, &t.layout)?;
    let current = sv::inspect(&programs.python).map_err(|e| e.to_string())?;
    let (target_venv, target_python) = target_venv(&config, version)?;
    let target = sv::inspect(&target_python).map_err(|e| e.to_string())?;
    let plan = LocalPlan::build(&config, &secrets, &t.layout, &shape, &programs);
    eprintln!("upgrade: proving every process's config in Synapse {version}");
    let failures = prove(&target_python, &plan)?;
    let db = db_schema(&programs, &secrets, &plan)?;
    let mut report = plan_report(&config, &current, &target, db, &failures);
    let refused = report["refused"].as_str().map(str::to_string);
    if refused.is_none() && apply && current.version != target.version {
        report["applied"] = if rolling_possible(&current, &target) && !coordinated {
            rolling_upgrade(t, &config, target_venv.as_deref(), &plan)?
        } else {
            coordinated_upgrade(t, &config, target_venv.as_deref(), &plan)?
        };
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&report).expect("json"));
    } else {
        print_report(&report);
    }
    Ok(if refused.is_some() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The venv of `version` (installed if missing; None: the runtime's own venv has it) and its
/// python.
pub fn target_venv(config: &Config, version: &str) -> Result<(Option<PathBuf>, PathBuf), String> {
    let runtime_python = Programs::discover_for(config)?.python;
    let runtime = sv::inspect(&runtime_python).map_err(|e| e.to_string())?;
    if runtime.version == version {
        return Ok((None, runtime_python));
    }
    let venv = sv::install(version, &runtime_python, &mut |m| eprintln!("upgrade: {m}"))
        .map_err(|e| e.to_string())?;
    let python = venv.join("bin/python");
    Ok((Some(venv), python))
}

/// A stack that never ran has no database to migrate: the version is installed and pinned, and
/// the first `up` runs it (and proves its configs by starting).
fn pin_fresh(t: &Target, config: &Config, version: &str, json: bool) -> CmdResult {
    let (venv, _) = target_venv(config, version)?;
    sv::pin(&t.layout, venv.as_deref()).map_err(|e| format!("cannot pin the version: {e}"))?;
    if json {
        println!("{}", json!({"pinned": version, "fresh_stack": true}));
    } else {
        println!("no database yet: the next `mxstack up` starts Synapse {version}");
    }
    Ok(ExitCode::SUCCESS)
}

fn plan_report(
    config: &Config,
    current: &SynapseBuild,
    target: &SynapseBuild,
    db: (u32, u32),
    failures: &[(String, String)],
) -> Value {
    let refused = if !failures.is_empty() {
        let names: Vec<String> = failures.iter().map(|(n, e)| format!("{n}: {e}")).collect();
        Some(format!(
            "the config does not load in Synapse {}: {}",
            target.version,
            names.join("; ")
        ))
    } else {
        refusal(db, target)
    };
    let mut steps = if rolling_possible(current, target) {
        vec![format!(
            "rolling: Synapse {} can run on the database Synapse {} migrates (its compat schema {} <= {}): restart every Synapse process on {} one at a time, main first (it applies the new schema deltas), each ready before the next stops; nothing else stops",
            current.version, target.version, target.compat, current.schema, target.version
        )]
    } else {
        vec![
            "stop every Synapse process (PostgreSQL, Valkey and the router keep running)"
                .to_string(),
            format!(
                "start Synapse main {}: it migrates the database from schema {} to {} once",
                target.version,
                db.0,
                target.schema.max(db.0)
            ),
            "start the workers group by group once main is ready".to_string(),
        ]
    };
    if config.has(mxstack_spec::Feature::Li) {
        steps.push("li-sync absorbs main's schema changes into the LI replica; Synapse LI restarts on the same version; apply waits until li-sync reports the replica's schema current".into());
    }
    json!({
        "current": current,
        "target": target,
        "database": {"schema": db.0, "compat": db.1},
        "configs_proven": failures.is_empty(),
        "rollback_after_upgrade": if target.compat > current.schema {
            format!("not possible by downgrading: schema {} is unreadable to Synapse {} (schema {}); restore a backup taken before the upgrade", target.compat, current.version, current.schema)
        } else {
            format!("possible: Synapse {} can run on schema {}", current.version, target.schema)
        },
        "upgrade_notes": format!("read {NOTES} for every release between {} and {} (Synapse publishes them as prose only)", current.version, target.version),
        "steps": steps,
        "refused": refused,
    })
}

/// No schema change: every Synapse process can run beside the other version for a moment, so
/// the supervisor restarts them one at a time (main first, each ready before the next stops)
/// on the new version, and nothing else stops.
fn rolling_upgrade(
    t: &Target,
    config: &Config,
    venv: Option<&std::path::Path>,
    plan: &LocalPlan,
) -> Result<Value, String> {
    let pid = t
        .running_supervisor()
        .ok_or("the stack's supervisor is not running")?;
    let synapse: Vec<String> = synapse_processes(plan)
        .into_iter()
        .map(|s| s.name.clone())
        .collect();
    sv::pin(&t.layout, venv).map_err(|e| format!("cannot pin the version: {e}"))?;
    eprintln!(
        "upgrade: no schema change: restarting {} Synapse processes one at a time",
        synapse.len()
    );
    let start = Instant::now();
    let actions = vec![
        mxstack_local::control::Action::Reload,
        mxstack_local::control::Action::Restart(synapse.clone()),
    ];
    if let Err(e) = mxstack_local::control::send(&t.layout, pid, actions, Duration::from_secs(900))
    {
        return Err(format!("the rolling restart stopped: {e}; the stack is pinned to the new version: run the same command again"));
    }
    let li = if config.has(mxstack_spec::Feature::Li) {
        Some(wait_li_schema(plan)?)
    } else {
        None
    };
    Ok(
        json!({"mode": "rolling", "restarted": synapse, "took_seconds": start.elapsed().as_secs_f64(), "li_schema_current_after_seconds": li}),
    )
}

/// Synapse's procedure for a schema change, on the running stack: every Synapse process stops
/// (the supervisor's coordinated reshape), the new version is pinned, main starts and migrates
/// the database once, then the workers group by group; Synapse LI restarts on the new version after.
/// PostgreSQL, Valkey, the router and the rest keep running.
fn coordinated_upgrade(
    t: &Target,
    config: &Config,
    venv: Option<&std::path::Path>,
    plan: &LocalPlan,
) -> Result<Value, String> {
    use mxstack_local::control::{self, Action};
    let pid = t
        .running_supervisor()
        .ok_or("the stack's supervisor is not running")?;
    sv::pin(&t.layout, venv).map_err(|e| format!("cannot pin the version: {e}"))?;
    eprintln!("upgrade: stopping every Synapse process; main migrates first, then the workers");
    let start = Instant::now();
    let mut actions = vec![Action::Reshape { coordinated: true }];
    let li: Vec<String> = synapse_processes(plan)
        .into_iter()
        .map(|s| s.name.clone())
        .filter(|n| plan.topology.processes().iter().all(|p| &p.name != n))
        .collect();
    if !li.is_empty() {
        actions.push(Action::Restart(li));
    }
    let outcome = control::send(&t.layout, pid, actions, Duration::from_secs(1800)).map_err(|e| {
        format!("the coordinated upgrade stopped: {e}; the stack is pinned to the new version: run the same command again")
    })?;
    let took = start.elapsed();
    let li = if config.has(mxstack_spec::Feature::Li) {
        Some(wait_li_schema(plan)?)
    } else {
        None
    };
    Ok(json!({
        "mode": "coordinated",
        "done": outcome.done,
        "took_seconds": took.as_secs_f64(),
        "li_schema_current_after_seconds": li,
    }))
}

/// Waits until li-sync reports the replica's schema current (it absorbs main's migration) for
/// three reads in a row: the new version's background updates may change main's schema again
/// just after it started.
fn wait_li_schema(plan: &LocalPlan) -> Result<f64, String> {
    let port = plan.addressing.li_sync().port;
    let start = Instant::now();
    let mut current_in_a_row = 0;
    while start.elapsed() < Duration::from_secs(300) {
        let r = mxstack_local::http::request(port, "GET", "/status", None, Duration::from_secs(5));
        let s = r.ok().and_then(|r| r.json()).map(|v| v["status"].clone());
        let current =
            s.is_some_and(|s| s["schema_behind"] == false && s["subscription_enabled"] == true);
        current_in_a_row = if current { current_in_a_row + 1 } else { 0 };
        if current_in_a_row == 3 {
            return Ok(start.elapsed().as_secs_f64());
        }
        std::thread::sleep(Duration::from_secs(5));
    }
    Err("li-sync did not report the LI replica's schema current within 5 minutes: `mxstack li status`, `mxstack logs li-sync`".into())
}

fn print_report(r: &Value) {
    println!(
        "Synapse {} -> {}",
        r["current"]["version"].as_str().unwrap_or("?"),
        r["target"]["version"].as_str().unwrap_or("?")
    );
    println!(
        "database: schema {} (usable by Synapse with schema {} or newer)",
        r["database"]["schema"], r["database"]["compat"]
    );
    println!(
        "configs load in the new version: {}",
        if r["configs_proven"] == true {
            "yes"
        } else {
            "NO"
        }
    );
    println!(
        "rollback: {}",
        r["rollback_after_upgrade"].as_str().unwrap_or("")
    );
    println!(
        "upgrade notes: {}",
        r["upgrade_notes"].as_str().unwrap_or("")
    );
    println!("steps:");
    for s in r["steps"].as_array().into_iter().flatten() {
        println!("  - {}", s.as_str().unwrap_or(""));
    }
    if let Some(why) = r["refused"].as_str() {
        println!("REFUSED: {why}");
    } else if let Some(a) = r.get("applied") {
        match a["stopped_for_seconds"].as_f64() {
            Some(s) => println!("applied: the stack was stopped for {s:.0} s (the schema changed)"),
            None => println!(
                "applied: rolling restart of every Synapse process in {:.0} s (no schema change)",
                a["took_seconds"].as_f64().unwrap_or(0.0)
            ),
        }
    } else if r["current"]["version"] == r["target"]["version"] {
        println!("already on this version: nothing to do");
    } else {
        println!("plan only: add --apply to upgrade");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(version: &str, schema: u32, compat: u32) -> SynapseBuild {
        SynapseBuild {
            version: version.into(),
            schema,
            compat,
        }
    }

    #[test]
    fn rolling_only_while_the_old_version_can_run_on_the_migrated_database() {
        assert!(rolling_possible(
            &build("1.162.0", 94, 84),
            &build("1.163.2", 94, 84)
        ));
        assert!(
            rolling_possible(&build("1.162.0", 93, 84), &build("1.163.2", 94, 84)),
            "additive deltas"
        );
        assert!(
            !rolling_possible(&build("1.150.0", 88, 84), &build("1.163.2", 94, 90)),
            "compat moved past the old schema"
        );
        assert!(
            !rolling_possible(&build("1.163.2", 94, 84), &build("1.150.0", 88, 84)),
            "a downgrade below the schema"
        );
    }

    #[test]
    fn a_database_too_new_for_the_target_is_refused() {
        assert!(refusal((93, 92), &build("1.163.2", 93, 92)).is_none());
        assert!(
            refusal((92, 88), &build("1.163.2", 93, 92)).is_none(),
            "an upgrade"
        );
        let why = refusal((93, 92), &build("1.100.0", 85, 83)).unwrap();
        assert!(
            why.contains("schema 92 or newer") && why.contains("restore"),
            "{why}"
        );
    }
}
