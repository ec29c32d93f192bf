//! `mxstack deploy` and `mxstack check --cluster`: the commands over crates/deploy.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use mxstack_checks::Finding;
use mxstack_deploy::apply::Change;
use mxstack_deploy::wait::WaitOptions;
use mxstack_deploy::{objects, Cluster, Event, Options};
use mxstack_spec::Secrets;
use serde_json::json;

use crate::commands::{check_and_render, load_secrets, report};

type CmdResult = Result<ExitCode, String>;

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

/// "90", "90s", "10m" or "1h" as a duration.
pub fn parse_timeout(s: &str) -> Result<Duration, String> {
    let (n, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = n
        .parse()
        .map_err(|_| format!("--timeout {s}: write seconds (600), or 600s, 10m, 1h"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("--timeout {s}: the unit must be s, m or h")),
    };
    Ok(Duration::from_secs(secs))
}

pub struct DeployArgs<'a> {
    pub config: &'a Path,
    pub secrets: Option<&'a Path>,
    pub kubeconfig: Option<&'a Path>,
    pub dry_run: bool,
    pub prune: bool,
    pub force_conflicts: bool,
    pub coordinated: bool,
    pub with_operators: bool,
    pub timeout: Duration,
    pub json: bool,
}

pub fn deploy(a: DeployArgs) -> CmdResult {
    let secrets: Secrets = match load_secrets(a.config, a.secrets) {
        Ok(s) => s,
        Err(f) => return Ok(report(&[*f], a.json, json!({ "applied": false }))),
    };
    let (findings, rendered) = check_and_render(a.config, &secrets, true, None);
    if findings.iter().any(Finding::is_error) {
        if !a.json {
            eprintln!("deploy refused: the config has errors; nothing was applied");
        }
        return Ok(report(&findings, a.json, json!({ "applied": false })));
    }
    let rendered = rendered.expect("rendered when no errors");
    let mut items = objects::items(&rendered);
    if a.with_operators {
        let (all, by_hand) = objects::with_operators(items)?;
        items = all;
        if !by_hand.is_empty() {
            if a.json {
                println!(
                    "{}",
                    json!({"event": "install_by_hand", "operators": by_hand})
                );
            } else {
                eprintln!(
                    "not vendored, install these first (`mxstack render --with-operators` prints the commands): {}",
                    by_hand.join(", ")
                );
            }
        }
    }
    let (config, _) = crate::commands::load_config(a.config).map_err(|f| f.to_string())?;
    let opts = Options {
        dry_run: a.dry_run,
        prune: a.prune,
        force_conflicts: a.force_conflicts,
        coordinated: a.coordinated,
        wait: WaitOptions {
            timeout: a.timeout,
            poll: Duration::from_secs(2),
            report_every: Duration::from_secs(15),
        },
    };
    let rt = runtime()?;
    let cluster = rt
        .block_on(Cluster::connect(a.kubeconfig))
        .map_err(|e| e.to_string())?;
    // Refuse early and clearly when the cluster cannot be reached or refuses the credentials.
    rt.block_on(cluster.version()).map_err(|e| e.to_string())?;
    let json = a.json;
    let mut on = |e: Event| show(&e, json);
    if !json {
        let mode = if a.dry_run {
            " (dry run: nothing is written)"
        } else {
            ""
        };
        eprintln!(
            "deploying {} objects to {}{mode}",
            items.len(),
            cluster.server
        );
    }
    match rt.block_on(mxstack_deploy::deploy(
        &cluster,
        &items,
        &config.namespace,
        opts,
        &mut on,
    )) {
        Ok(s) => {
            if json {
                println!("{}", json!({"event": "done", "ok": true, "summary": s}));
            } else {
                println!("{}", summary_text(&s));
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(stopped) => {
            if json {
                println!(
                    "{}",
                    json!({"event": "stopped", "ok": false, "phase": stopped.phase, "object": stopped.object,
                           "done": stopped.done, "error": stopped.error.to_string()})
                );
            } else {
                eprintln!("deploy stopped: {stopped}");
            }
            Ok(ExitCode::from(1))
        }
    }
}

fn summary_text(s: &mxstack_deploy::Summary) -> String {
    let verb = if s.dry_run { "would be " } else { "" };
    let mut t = if s.changed() {
        format!(
            "{} {verb}created, {} {verb}configured, {} unchanged, {} {verb}pruned in {} phases ({:.1}s)",
            s.created,
            s.configured,
            s.unchanged,
            s.pruned,
            s.phases.len(),
            s.elapsed_s
        )
    } else {
        format!(
            "nothing changed: all {} objects are as rendered ({:.1}s)",
            s.unchanged, s.elapsed_s
        )
    };
    if s.leftovers > 0 {
        t.push_str(&format!(
            "; {} objects left the render and are kept (--prune deletes them)",
            s.leftovers
        ));
    }
    t
}

/// One line per event: JSON on stdout, or text progress on stderr.
fn show(e: &Event, json: bool) {
    if json {
        println!("{}", serde_json::to_string(e).expect("events serialize"));
        let _ = std::io::stdout().flush();
        return;
    }
    match e {
        Event::Phase { phase, objects } => eprintln!("phase {phase} ({objects} objects)"),
        // Unchanged objects are counted in the summary, not listed: a re-run stays readable.
        Event::Applied {
            change: Change::Unchanged,
            ..
        } => {}
        Event::Applied {
            object,
            change,
            diff,
            ..
        } => {
            eprintln!("  {:<11}{object}", change.word());
            for d in diff {
                eprintln!("      {d}");
            }
        }
        Event::Waiting {
            object,
            state,
            elapsed_s,
            ..
        } => {
            eprintln!("  {:<11}{object}: {state} ({elapsed_s:.0}s)", "waiting")
        }
        Event::Ready {
            object, elapsed_s, ..
        } => eprintln!("  {:<11}{object} ({elapsed_s:.1}s)", "ready"),
        Event::Pruned { object, dry_run } => {
            eprintln!(
                "  {:<11}{object}",
                if *dry_run { "would prune" } else { "pruned" }
            )
        }
        Event::Leftover { object } => eprintln!(
            "  {:<11}{object} (left the render; --prune deletes it)",
            "kept"
        ),
        Event::Coordinated { reason } => {
            eprintln!("coordinated restart of Synapse: {reason}")
        }
        Event::ScaledToZero { object, elapsed_s } => {
            eprintln!("  {:<11}{object} ({elapsed_s:.1}s)", "stopped")
        }
    }
}

/// The findings of `check --cluster` for the rendered `items`.
pub fn cluster_findings(
    rendered: &mxstack_k8s::Rendered,
    storage_class: Option<&str>,
    kubeconfig: Option<&Path>,
) -> Result<(Vec<Finding>, serde_json::Value), String> {
    let items = objects::items(rendered);
    let rt = runtime()?;
    let cluster = rt
        .block_on(Cluster::connect(kubeconfig))
        .map_err(|e| e.to_string())?;
    let r = rt
        .block_on(mxstack_deploy::cluster::check(
            &cluster,
            &items,
            storage_class,
        ))
        .map_err(|e| e.to_string())?;
    let extra = json!({"server": r.server, "kubernetes": r.kubernetes, "operators": r.operators});
    Ok((r.findings, extra))
}

pub fn print_cluster(extra: &serde_json::Value, json: bool) {
    if json {
        return;
    }
    eprintln!(
        "cluster {} runs Kubernetes {}",
        extra["server"].as_str().unwrap_or(""),
        extra["kubernetes"].as_str().unwrap_or("")
    );
    for o in extra["operators"].as_array().into_iter().flatten() {
        eprintln!(
            "  {:<45} minimum {:<6} found {}",
            o["operator"].as_str().unwrap_or(""),
            o["minimum"].as_str().unwrap_or(""),
            o["version"].as_str().unwrap_or("?")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_take_seconds_minutes_and_hours() {
        assert_eq!(parse_timeout("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_timeout("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_timeout("1h").unwrap(), Duration::from_secs(3600));
        assert!(parse_timeout("10d").unwrap_err().contains("s, m or h"));
        assert!(parse_timeout("soon").is_err());
    }
}
