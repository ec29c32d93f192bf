//! `mxstack scale GROUP=N ...`: change the worker layout of the running local stack
//! (docs/SCALING.md). The change is worked out by `mxstack_topology::change` (the same as
//! `plan --from`): more or fewer synchrotrons or generic workers is live; a change of the stream
//! writers or sharded instances (event persisters, federation senders, pushers) is a coordinated
//! restart, which the supervisor carries out (`Action::Reshape`).

use std::process::ExitCode;
use std::time::Duration;

use mxstack_local::control::{self, Action};
use mxstack_local::plan::local_topology;
use mxstack_local::shape::{MAX_LOCAL_PROCESSES, SCALABLE};
use mxstack_local::{ProcessState, Shape, StackStatus};
use mxstack_spec::Component;
use mxstack_topology::change::{self, Effect};
use mxstack_topology::{SynapseProcess, Topology};
use serde_json::json;

use crate::local::Target;

type CmdResult = Result<ExitCode, String>;

/// `event-persister=2` → (EventPersister, 2), for the groups `up --replicas` sets.
pub fn parse_change(arg: &str) -> Result<(Component, u32), String> {
    let names = || {
        SCALABLE
            .iter()
            .map(|(c, _)| component_name(*c))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (group, n) = arg.split_once('=').ok_or_else(|| {
        format!(
            "`{arg}`: write GROUP=N, e.g. synchrotron=2 (groups: {})",
            names()
        )
    })?;
    let component = SCALABLE
        .iter()
        .map(|(c, _)| *c)
        .find(|c| component_name(*c) == group)
        .ok_or_else(|| {
            format!(
                "`{group}` is not a scalable worker group (groups: {})",
                names()
            )
        })?;
    let n: u32 = n
        .parse()
        .map_err(|_| format!("`{arg}`: N must be a whole number"))?;
    if !(1..=MAX_LOCAL_PROCESSES).contains(&n) {
        return Err(format!(
            "`{arg}`: a group runs 1 to {MAX_LOCAL_PROCESSES} processes here (`up --replicas 0` runs Synapse as one process)"
        ));
    }
    Ok((component, n))
}

fn component_name(c: Component) -> String {
    serde_json::to_value(c)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// A scale the supervisor has not finished: `{"coordinated": bool}`.
fn pending_file(t: &Target) -> std::path::PathBuf {
    t.layout.root.join("scale-pending.json")
}

/// What a scale comes to, before anything is touched.
struct Planned {
    shape: Shape,
    /// Running processes whose connection pool must shrink first (see `pools_to_shrink`).
    shrink: Vec<String>,
    changes: Vec<change::Change>,
    coordinated: bool,
    new_ports: Vec<u16>,
    /// The Synapse processes that run now (a coordinated restart stops them all).
    running: Vec<String>,
}

fn plan(t: &Target, args: &[String], running: bool) -> Result<Planned, String> {
    let (config, _) = t.load()?;
    let old = t.layout.shape().ok_or(
        "no record of how the stack was started (up-args.json): start it with `mxstack up`",
    )?;
    if old.replicas == 0 {
        return Err("this stack runs Synapse as one process (`up --replicas 0`): there are no worker groups to scale; `mxstack down` and `mxstack up --replicas 1` first".into());
    }
    let mut shape = old.clone();
    for a in args {
        let (c, n) = parse_change(a)?;
        shape.groups.insert(c, n);
    }
    let (old_t, old_addr) = local_topology(&config, &t.layout, &old);
    let (new_t, new_addr) = local_topology(&config, &t.layout, &shape);
    shape.order = new_addr.process_order.clone();
    let shrink = pools_to_shrink(&old_t, &new_t);
    let running_now = old_t.processes().into_iter().map(|p| p.name).collect();
    let changes = change::diff(&old_t, &new_t);
    // Locally only Synapse's processes change shape; anything that would also restart
    // PostgreSQL or Valkey (new sizes) is a `down` and `up`.
    if let Some(c) = changes
        .iter()
        .find(|c| running && matches!(c.effect, Effect::Nodes | Effect::RollingRestart))
    {
        return Err(format!(
            "refused: `{}` needs a restart `mxstack scale` does not do on a running stack: `mxstack down`, run this `mxstack scale` again (it records the shape), then `mxstack up` with the same --replicas",
            c.what
        ));
    }
    let coordinated = changes
        .iter()
        .any(|c| c.effect == Effect::CoordinatedRestart);
    let held = old_addr.ports();
    let new_ports = new_addr
        .ports()
        .into_iter()
        .filter(|p| !held.contains(p))
        .collect();
    Ok(Planned {
        shape,
        shrink,
        running: running_now,
        changes,
        coordinated,
        new_ports,
    })
}

/// A live change keeps the running processes with the pools they started with, sized for the old
/// process count. When those and the new processes' pools together exceed the new connection
/// budget (`mxstack_topology::budget`), the processes whose pool shrinks restart one at a time
/// after the change (a rolling restart: nothing stops at once).
fn pools_to_shrink(old: &Topology, new: &Topology) -> Vec<String> {
    let cp = |t: &Topology, p: &SynapseProcess| {
        t.budget
            .pools
            .iter()
            .find(|l| l.group == p.group)
            .map(|l| l.cp_max)
    };
    let old_procs = old.processes();
    let mut total = 0;
    let mut shrinking = Vec::new();
    for p in new.processes() {
        let now = cp(new, &p).unwrap_or(0);
        match old_procs.iter().find(|o| o.name == p.name) {
            Some(o) => {
                let before = cp(old, o).unwrap_or(now);
                total += before;
                if before > now {
                    shrinking.push(p.name.clone());
                }
            }
            None => total += now,
        }
    }
    if total > new.budget.budget {
        shrinking
    } else {
        Vec::new()
    }
}

/// Every Synapse process must be ready: a coordinated restart stops them all cleanly, and a
/// writer that is crashing or starting could not agree on the new lists.
fn all_ready(status: &StackStatus, synapse: &[String]) -> Result<(), String> {
    let not: Vec<String> = status
        .processes
        .iter()
        .filter(|p| synapse.contains(&p.name) && p.state != ProcessState::Ready)
        .map(|p| format!("{} ({:?})", p.name, p.state))
        .collect();
    if !not.is_empty() {
        return Err(format!(
            "refused: not every Synapse process is ready ({}); a change of the stream writers needs each to stop cleanly so that no stream position is lost. See `mxstack status` and try again",
            not.join(", ")
        ));
    }
    Ok(())
}

pub fn scale(t: &Target, args: &[String], dry_run: bool, json: bool) -> CmdResult {
    if args.is_empty() {
        return Err(
            "name a change, e.g. `mxstack scale --config C synchrotron=2 event-persister=2`".into(),
        );
    }
    let Some(pid) = t.running_supervisor() else {
        return record_only(t, args, dry_run, json);
    };
    let p = plan(t, args, true)?;
    let status = StackStatus::load(&t.layout.status_file())
        .filter(|s| s.phase == "ready")
        .ok_or("the stack is not ready (see `mxstack status`)")?;
    if p.coordinated {
        all_ready(&status, &p.running)?;
    }
    if let Some(busy) = p
        .new_ports
        .iter()
        .find(|port| std::net::TcpListener::bind(("127.0.0.1", **port)).is_err())
    {
        return Err(format!("refused: port {busy}, which a new process would take, is in use; free it or `mxstack down` and `up --base-port` elsewhere"));
    }
    let mode = if p.changes.is_empty() {
        "none"
    } else if p.coordinated {
        "coordinated_restart"
    } else {
        "live"
    };
    let pending = pending_file(t);
    let resumed: Option<bool> = std::fs::read_to_string(&pending)
        .ok()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        .and_then(|v| v["coordinated"].as_bool());
    let mut report = json!({ "mode": mode, "changes": p.changes, "dry_run": dry_run });
    if !p.coordinated && !p.shrink.is_empty() {
        report["rolling_restart"] = json!(p.shrink);
    }
    if let Some(was) = resumed.filter(|_| !dry_run) {
        eprintln!(
            "scale: an interrupted scale is recorded in {}; finishing it",
            pending.display()
        );
        report["resumed"] = json!(true);
        if p.changes.is_empty() {
            report["mode"] = json!(if was { "coordinated_restart" } else { "live" });
        }
    }
    let coordinated = p.coordinated || resumed == Some(true);
    if !dry_run && (!p.changes.is_empty() || resumed.is_some()) {
        // Recorded first: the supervisor may be half way when this command is interrupted,
        // and a re-run (even with nothing left to change) carries the reshape out again.
        std::fs::write(&pending, json!({ "coordinated": coordinated }).to_string())
            .map_err(|e| format!("cannot write {}: {e}", pending.display()))?;
        eprintln!("scale: {mode}: {} change(s)", p.changes.len());
        p.shape
            .save(&t.layout.up_args_file())
            .map_err(|e| e.to_string())?;
        let start = std::time::Instant::now();
        let outcome = control::send(
            &t.layout,
            pid,
            std::iter::once(Action::Reshape { coordinated })
                .chain((!coordinated && !p.shrink.is_empty()).then(|| Action::Restart(p.shrink.clone())))
                .collect(),
            Duration::from_secs(900),
        )
        .map_err(|e| format!("{e}; the new shape is recorded, re-run `mxstack scale` with the same arguments to finish"))?;
        let _ = std::fs::remove_file(&pending);
        report["done"] = json!(outcome.done);
        report["took_seconds"] = json!(start.elapsed().as_secs_f64());
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&report).expect("json"));
    } else {
        for c in &p.changes {
            let effect = serde_json::to_value(c.effect).expect("effect");
            println!("{:<20} {}", effect.as_str().unwrap_or_default(), c.what);
        }
        match report["took_seconds"].as_f64() {
            Some(s) => println!("done in {s:.1}s"),
            None if p.changes.is_empty() => println!("nothing changes"),
            None => println!("dry run: nothing was changed"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A stopped stack: the shape is recorded, and the next `up` with the same `--replicas` and
/// `--base-port` runs it.
fn record_only(t: &Target, args: &[String], dry_run: bool, json: bool) -> CmdResult {
    let p = plan(t, args, false)?;
    if !dry_run {
        p.shape
            .save(&t.layout.up_args_file())
            .map_err(|e| e.to_string())?;
    }
    let next = format!(
        "mxstack up --config {} --replicas {} --base-port {}",
        t.config.display(),
        p.shape.replicas,
        p.shape.base_port
    );
    if json {
        let r =
            json!({ "mode": "recorded", "changes": p.changes, "dry_run": dry_run, "next": next });
        println!("{}", serde_json::to_string_pretty(&r).expect("json"));
    } else {
        println!(
            "the stack is not running: the shape is {}; `{next}` runs it",
            if dry_run {
                "unchanged (dry run)"
            } else {
                "recorded"
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_parse_and_bad_ones_say_how_to_write_them() {
        assert_eq!(
            parse_change("event-persister=2").unwrap(),
            (Component::EventPersister, 2)
        );
        assert_eq!(
            parse_change("synchrotron=1").unwrap(),
            (Component::Synchrotron, 1)
        );
        assert!(parse_change("synchrotron").unwrap_err().contains("GROUP=N"));
        let e = parse_change("background=2").unwrap_err();
        assert!(
            e.contains("not a scalable") && e.contains("event-persister"),
            "{e}"
        );
        assert!(parse_change("generic=0").unwrap_err().contains("1 to 8"));
        assert!(parse_change("generic=x")
            .unwrap_err()
            .contains("whole number"));
    }
}
