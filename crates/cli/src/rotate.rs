//! `mxstack rotate`: replace secrets without losing a request (docs/ROTATION.md). Locally it
//! drives the running supervisor through the phases of `mxstack_local::rotation`, recording
//! each in the journal; for Kubernetes it replaces the value in secrets.yaml and names the
//! workloads that roll on the next `deploy` (their secrets-hash annotation changes).

use std::process::ExitCode;
use std::time::Duration;

use mxstack_local::control;
use mxstack_local::plan::Programs;
use mxstack_local::rotation::{self, Journal, Phase};
use mxstack_local::LocalPlan;
use mxstack_spec::{Config, Rotation, SecretName, Secrets};
use mxstack_topology::registry as reg;

use crate::local::Target;

type CmdResult = Result<ExitCode, String>;

/// A rolling restart of every Synapse process can take minutes on a busy machine.
const PHASE_TIMEOUT: Duration = Duration::from_secs(1200);

/// Test hook: stop after this phase, as an interrupted run would (tests/e2e/test_rotate.py).
const INTERRUPT_AFTER: &str = "MXSTACK_ROTATE_INTERRUPT_AFTER";

/// The secrets named on the command line, refusing any `mxstack rotate` cannot replace.
pub fn parse_names(names: &[String], all: bool) -> Result<Vec<SecretName>, String> {
    if all {
        return Ok(SecretName::rotatable());
    }
    if names.is_empty() {
        return Err("name a secret (see `mxstack rotate --help`) or give --all-rotatable".into());
    }
    let mut out = Vec::new();
    for n in names {
        let name = SecretName::from_key(n).ok_or_else(|| {
            format!(
                "unknown secret `{n}`; rotatable: {}",
                rotatable_keys().join(", ")
            )
        })?;
        match name.rotation() {
            Rotation::Rotatable => {
                out.push(name);
                // A key id and its secret are one credential on the accepting side.
                out.extend(name.companion());
            }
            Rotation::NotYet(why) => return Err(format!("`{n}` is not rotatable yet: {why}")),
            Rotation::Never(why) => {
                return Err(format!("`{n}` is not rotated by `mxstack rotate`: {why}"))
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn rotatable_keys() -> Vec<&'static str> {
    SecretName::rotatable().iter().map(|n| n.key()).collect()
}

pub fn rotate(t: &Target, names: &[String], all: bool, kubernetes: bool) -> CmdResult {
    let wanted = parse_names(names, all)?;
    if kubernetes {
        return rotate_kubernetes(t, &wanted);
    }
    let path = rotation::journal_file(&t.layout);
    let mut journal = match Journal::load(&path).map_err(|e| e.to_string())? {
        Some(j) => {
            let recorded = j.secret_names();
            if recorded != wanted && !all {
                return Err(format!(
                    "an interrupted rotation of {} is recorded in {} (next phase: {}); run `mxstack rotate {}` to finish it first",
                    j.names.join(", "),
                    path.display(),
                    j.phase.as_str(),
                    j.names.join(" ")
                ));
            }
            println!(
                "resuming the rotation of {} at phase {} (journal {})",
                j.names.join(", "),
                j.phase.as_str(),
                path.display()
            );
            j
        }
        None => {
            let j = Journal::start(&wanted).map_err(|e| e.to_string())?;
            j.save(&path).map_err(|e| e.to_string())?;
            println!("rotating {}", j.names.join(", "));
            j
        }
    };
    let pid = t
        .running_supervisor_pid()
        .ok_or("the local stack is not running: start it with `mxstack up` (the journal is kept; re-run to resume)")?;
    while journal.phase != Phase::Done {
        let phase = journal.phase;
        run_phase(t, &journal, phase, pid)?;
        journal.advance(phase);
        journal.save(&path).map_err(|e| e.to_string())?;
        if std::env::var(INTERRUPT_AFTER).ok().as_deref() == Some(phase.as_str()) {
            println!(
                "interrupted after phase {} ({INTERRUPT_AFTER})",
                phase.as_str()
            );
            return Ok(ExitCode::from(75));
        }
    }
    std::fs::remove_file(&path).map_err(|e| format!("cannot remove {}: {e}", path.display()))?;
    println!(
        "rotated {}: the old values are no longer accepted",
        journal.names.join(", ")
    );
    Ok(ExitCode::SUCCESS)
}

/// One phase: secrets.yaml first (stage, retire), then the supervisor's actions.
fn run_phase(t: &Target, journal: &Journal, phase: Phase, pid: u32) -> Result<(), String> {
    let mut secrets = Secrets::load(&t.secrets).map_err(|e| e.to_string())?;
    match phase {
        Phase::Stage => journal.stage(&mut secrets),
        Phase::Retire => journal.retire(&mut secrets),
        _ => {}
    }
    if matches!(phase, Phase::Stage | Phase::Retire) {
        secrets
            .write(&t.secrets)
            .map_err(|e| format!("cannot write {}: {e}", t.secrets.display()))?;
    }
    let plan = running_plan(t, &secrets)?;
    let actions = rotation::actions(phase, &journal.secret_names(), &plan, &secrets);
    println!("phase {}: {}", phase.as_str(), describe(phase));
    if actions.is_empty() {
        return Ok(());
    }
    let outcome = control::send(&t.layout, pid, actions, PHASE_TIMEOUT)
        .map_err(|e| format!("phase {}: {e} (re-run to resume)", phase.as_str()))?;
    for line in outcome.done {
        println!("  {line}");
    }
    Ok(())
}

fn describe(phase: Phase) -> &'static str {
    match phase {
        Phase::Stage => "secrets.yaml holds the new values, the old ones as previous.<name>",
        Phase::Accept => "components that can hold two values accept the new one as well",
        Phase::Switch => "every process that reads them restarts, one at a time, in start order",
        Phase::Retire => "the old values are dropped and refused",
        Phase::Done => "done",
    }
}

/// The plan of the running stack with `secrets`: its `--replicas` and `--base-port` as `up`
/// recorded them.
fn running_plan(t: &Target, secrets: &Secrets) -> Result<LocalPlan, String> {
    let (config, _) = Config::load(&t.config).map_err(|e| e.to_string())?;
    let shape = t.layout.shape().ok_or(
        "no record of how the stack was started (up-args.json): start it with `mxstack up`",
    )?;
    // The supervisor's programs: with the Synapse `mxstack upgrade` pinned, if any.
    let programs = Programs::for_stack(&config, &t.layout)?;
    Ok(LocalPlan::build(
        &config, secrets, &t.layout, &shape, &programs,
    ))
}

/// Kubernetes: `render` + `deploy` apply the Secrets and roll exactly the workloads whose
/// secrets-hash changes. Where a component accepts two values (registry `accepts_previous`:
/// SeaweedFS, LiveKit, the key vault) the rotation takes three deploys, each after one
/// atomic write of secrets.yaml (nothing to resume): this step puts the new value in
/// `next.<name>`, so the first deploy rolls the accepting side alone, with both; `--switch` makes
/// it the value (the readers roll, the accepting side holds the same two); `--retire` drops the
/// old one (the accepting side rolls alone). Any other secret is replaced at once.
fn rotate_kubernetes(t: &Target, names: &[SecretName]) -> CmdResult {
    let mut secrets = Secrets::load(&t.secrets).map_err(|e| e.to_string())?;
    if let Some(n) = SecretName::ALL
        .into_iter()
        .find(|n| secrets.next(*n).is_some() || secrets.previous(*n).is_some())
    {
        return Err(format!(
            "a rotation of `{}` is under way in {}: finish it with `mxstack rotate --kubernetes --switch` or `--retire` first",
            n.key(),
            t.secrets.display()
        ));
    }
    let mut staged = Vec::new();
    for n in names {
        let value = mxstack_spec::generate(n.shape()).map_err(|e| e.to_string())?;
        if accepted_twice(*n) {
            secrets.set_next(*n, &value);
            staged.push(*n);
        } else {
            secrets.replace_keeping_previous(*n, &value);
            secrets.drop_previous(*n);
        }
    }
    secrets
        .write(&t.secrets)
        .map_err(|e| format!("cannot write {}: {e}", t.secrets.display()))?;
    for n in names.iter().filter(|n| !staged.contains(n)) {
        println!(
            "{}: new value in {}; on `mxstack deploy` these roll: {}",
            n.key(),
            t.secrets.display(),
            readers(*n).join(", ")
        );
    }
    for n in &staged {
        println!(
            "{}: new value in {} as next.{}; on `mxstack deploy` these roll to accept it besides the current one: {}",
            n.key(),
            t.secrets.display(),
            n.key(),
            acceptors(&[*n]).join(", ")
        );
    }
    println!(
        "next: mxstack render --config {} --out <dir> && mxstack deploy ... (docs/ROTATION.md: the order and what each costs)",
        t.config.display()
    );
    if !staged.is_empty() {
        println!(
            "then: mxstack rotate --kubernetes --switch --config {c}, render and deploy (the readers switch); then mxstack rotate --kubernetes --retire --config {c}, render and deploy (the old values are refused)",
            c = t.config.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Kubernetes, second step: every `next.<name>` becomes the value, the old one its
/// `previous.<name>`; the next deploy rolls the readers, and not the accepting side.
pub fn switch_kubernetes(t: &Target) -> CmdResult {
    let mut secrets = Secrets::load(&t.secrets).map_err(|e| e.to_string())?;
    let switched: Vec<SecretName> = SecretName::ALL
        .into_iter()
        .filter(|n| secrets.promote_next(*n))
        .collect();
    if switched.is_empty() {
        return Err(format!(
            "nothing to switch: {} holds no next value (start with `mxstack rotate NAME --kubernetes`)",
            t.secrets.display()
        ));
    }
    secrets
        .write(&t.secrets)
        .map_err(|e| format!("cannot write {}: {e}", t.secrets.display()))?;
    let mut rolls: Vec<&str> = switched.iter().flat_map(|n| readers(*n)).collect();
    let accepting = acceptors(&switched);
    rolls.retain(|r| !accepting.contains(r));
    rolls.sort_unstable();
    rolls.dedup();
    println!(
        "switched {}; on the next `mxstack deploy` these roll: {}; then mxstack rotate --kubernetes --retire --config {}",
        keys(&switched),
        rolls.join(", "),
        t.config.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Kubernetes, third step: the retiring values leave secrets.yaml; the next deploy rolls the
/// components that accepted them, and no reader.
pub fn retire_kubernetes(t: &Target) -> CmdResult {
    let mut secrets = Secrets::load(&t.secrets).map_err(|e| e.to_string())?;
    if let Some(n) = SecretName::ALL
        .into_iter()
        .find(|n| secrets.next(*n).is_some())
    {
        return Err(format!(
            "`{}` has not been switched yet: run `mxstack rotate --kubernetes --switch`, render and deploy first",
            n.key()
        ));
    }
    let retiring: Vec<SecretName> = SecretName::ALL
        .into_iter()
        .filter(|n| secrets.previous(*n).is_some())
        .collect();
    if retiring.is_empty() {
        println!(
            "nothing to retire: {} holds no previous value",
            t.secrets.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    for n in &retiring {
        secrets.drop_previous(*n);
    }
    secrets
        .write(&t.secrets)
        .map_err(|e| format!("cannot write {}: {e}", t.secrets.display()))?;
    println!(
        "retired {}; on the next `mxstack deploy` these roll: {}",
        keys(&retiring),
        acceptors(&retiring).join(", ")
    );
    Ok(ExitCode::SUCCESS)
}

fn keys(names: &[SecretName]) -> String {
    names.iter().map(|n| n.key()).collect::<Vec<_>>().join(", ")
}

/// The registry components that accept two values of any of `names`.
fn acceptors(names: &[SecretName]) -> Vec<&'static str> {
    reg::ALL
        .iter()
        .filter(|c| names.iter().any(|n| c.accepts_previous.contains(n)))
        .map(|c| c.name())
        .collect()
}

/// Whether a Kubernetes component accepts the retiring value of `name` besides the new one.
fn accepted_twice(name: SecretName) -> bool {
    reg::ALL.iter().any(|c| c.accepts_previous.contains(&name))
}

/// The registry components that read `name` (their workloads roll when it changes).
fn readers(name: SecretName) -> Vec<&'static str> {
    reg::ALL
        .iter()
        .filter(|c| c.reads.contains(&name))
        .map(|c| c.name())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_not_rotatable_are_refused_with_the_reason() {
        let e = parse_names(&["synapse_signing_key".into()], false).unwrap_err();
        assert!(e.contains("federation identity"), "{e}");
        assert!(parse_names(&["nonsense".into()], false).is_err());
        assert_eq!(
            parse_names(&["form_secret".into(), "form_secret".into()], false).unwrap(),
            vec![SecretName::FormSecret]
        );
        assert_eq!(parse_names(&[], true).unwrap(), SecretName::rotatable());
    }

    #[test]
    fn a_key_id_and_its_secret_rotate_together() {
        assert_eq!(
            parse_names(&["li_s3_secret_key".into()], false).unwrap(),
            vec![SecretName::LiS3AccessKey, SecretName::LiS3SecretKey]
        );
        assert_eq!(
            parse_names(
                &["livekit_api_key".into(), "livekit_api_secret".into()],
                false
            )
            .unwrap(),
            vec![SecretName::LivekitApiKey, SecretName::LivekitApiSecret]
        );
    }
}
