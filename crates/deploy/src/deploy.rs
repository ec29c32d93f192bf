//! `mxstack deploy`: apply phase by phase, wait on what matters between phases, then prune.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::apply::{self, ApplyOptions, Change};
use crate::objects::{phases, Item};
use crate::prune::{self, Leftover, Record};
use crate::wait::{self, WaitOptions};
use crate::{coordinate, Cluster, Error};

#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub dry_run: bool,
    pub prune: bool,
    pub force_conflicts: bool,
    /// Stop every Synapse process before any starts (`crate::coordinate`), even when the
    /// agreed lists stay the same (a release that changes the database schema).
    pub coordinated: bool,
    pub wait: WaitOptions,
}

/// What deploy reports as it goes (`--json` prints each as one line).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Phase {
        phase: String,
        objects: usize,
    },
    Applied {
        phase: String,
        object: String,
        change: Change,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        diff: Vec<String>,
    },
    Waiting {
        phase: String,
        object: String,
        state: String,
        elapsed_s: f64,
    },
    Ready {
        phase: String,
        object: String,
        elapsed_s: f64,
    },
    Pruned {
        object: String,
        dry_run: bool,
    },
    /// Belongs to the instance, left the render, kept because --prune was not given.
    Leftover {
        object: String,
    },
    /// This deploy restarts Synapse coordinated (`crate::coordinate`), and why.
    Coordinated {
        reason: String,
    },
    /// A Synapse workload was applied at 0 replicas and its pods are gone.
    ScaledToZero {
        object: String,
        elapsed_s: f64,
    },
}

/// The totals of a deploy.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub created: usize,
    pub configured: usize,
    pub unchanged: usize,
    pub pruned: usize,
    pub leftovers: usize,
    pub phases: Vec<String>,
    pub dry_run: bool,
    pub elapsed_s: f64,
}

impl Summary {
    pub fn changed(&self) -> bool {
        self.created + self.configured + self.pruned > 0
    }
}

/// Where a deploy stopped, and how to go on.
#[derive(Debug, thiserror::Error)]
#[error("{error}\nstopped in phase {phase}{}; {}", object.as_ref().map(|o| format!(" at {o}")).unwrap_or_default(), resume_text(.done))]
pub struct Stopped {
    pub phase: String,
    pub object: Option<String>,
    /// Phases applied and ready before it stopped.
    pub done: Vec<String>,
    pub error: Error,
}

fn resume_text(done: &[String]) -> String {
    let before = if done.is_empty() {
        "nothing was complete before it".to_string()
    } else {
        format!("complete before it: {}", done.join(", "))
    };
    format!("{before}. Fix the cause and run the same `mxstack deploy` again: it re-applies every phase (unchanged objects stay untouched) and resumes the waits")
}

/// Applies `items` (every rendered object, in phase order) to the instance in namespace
/// `home`. `on` hears every [`Event`].
pub async fn deploy(
    cluster: &Cluster,
    items: &[Item],
    home: &str,
    opts: Options,
    on: &mut dyn FnMut(Event),
) -> Result<Summary, Stopped> {
    let start = Instant::now();
    let id = prune::applyset_id(home);
    let mut summary = Summary {
        dry_run: opts.dry_run,
        ..Default::default()
    };
    let wanted = Record::of(items, home);
    let mut previous: Option<Record> = None;
    let coordinated = if opts.coordinated {
        Some("asked for (--coordinated)".to_string())
    } else {
        coordinate::reason(cluster, items, home)
            .await
            .map_err(|e| Stopped {
                phase: "coordinate".into(),
                object: None,
                done: Vec::new(),
                error: e,
            })?
    };
    if let Some(reason) = &coordinated {
        on(Event::Coordinated {
            reason: reason.clone(),
        });
    }
    for (phase, objects) in phases(items) {
        let synapse = objects.iter().any(|i| coordinate::is_synapse_workload(i));
        let objects = if coordinated.is_some() && synapse {
            coordinated_order(objects)
        } else {
            objects
        };
        let stop = |object: Option<String>, done: &[String], error: Error| Stopped {
            phase: phase.clone(),
            object,
            done: done.to_vec(),
            error,
        };
        on(Event::Phase {
            phase: phase.clone(),
            objects: objects.len(),
        });
        if coordinated.is_some() && synapse && !opts.dry_run {
            scale_to_zero(cluster, &objects, &id, opts, on)
                .await
                .map_err(|(o, e)| stop(Some(o), &summary.phases, e))?;
        }
        let mut applied = Vec::new();
        for item in objects {
            // The namespace must exist before the parent can record anything in it.
            if previous.is_none() && item.namespace.is_some() {
                previous = Some(
                    track(cluster, home, &wanted, opts.dry_run)
                        .await
                        .map_err(|e| stop(None, &summary.phases, e))?,
                );
            }
            let item = prune::labelled(item, &id);
            let a = match apply_one(cluster, &item, opts).await {
                Ok(a) => a,
                Err(e) => return Err(stop(Some(item.id()), &summary.phases, e)),
            };
            count(&mut summary, a.change);
            on(Event::Applied {
                phase: phase.clone(),
                object: item.id(),
                change: a.change,
                diff: if opts.dry_run { a.diff } else { Vec::new() },
            });
            // Coordinated: main starts (and migrates) before any worker is applied.
            if coordinated.is_some()
                && !opts.dry_run
                && item.name == coordinate::SYNAPSE_MAIN
                && coordinate::is_synapse_workload(&item)
            {
                wait_ready(cluster, &item, &phase, opts.wait, on)
                    .await
                    .map_err(|e| stop(Some(item.id()), &summary.phases, e))?;
            }
            applied.push(item);
        }
        if !opts.dry_run {
            for item in applied
                .iter()
                .filter(|i| wait::waited(&i.api_version, &i.kind))
            {
                wait_ready(cluster, item, &phase, opts.wait, on)
                    .await
                    .map_err(|e| stop(Some(item.id()), &summary.phases, e))?;
            }
        }
        summary.phases.push(phase.clone());
    }
    let previous = previous.unwrap_or_default();
    finish(
        cluster,
        items,
        home,
        &wanted,
        &previous,
        opts,
        &mut summary,
        on,
    )
    .await
    .map_err(|e| Stopped {
        phase: "prune".into(),
        object: None,
        done: summary.phases.clone(),
        error: e,
    })?;
    summary.elapsed_s = secs(start.elapsed());
    Ok(summary)
}

/// Records, before anything of this run is applied, every kind and namespace the instance uses
/// now or used before (so a crash mid-deploy leaves nothing untracked). Returns the old record.
async fn track(
    cluster: &Cluster,
    home: &str,
    wanted: &Record,
    dry_run: bool,
) -> Result<Record, Error> {
    let old = match prune::recorded(cluster, home).await {
        Ok(r) => r,
        // Under dry run the namespace may not exist yet.
        Err(e) if dry_run && e.is_not_found() => Record::default(),
        Err(e) => return Err(e),
    };
    if !dry_run {
        prune::record(cluster, home, &old.union(wanted), false).await?;
    }
    Ok(old)
}

/// A phase's objects for a coordinated restart: everything else first (ConfigMaps, Services),
/// then Synapse main, then the workers.
fn coordinated_order(objects: Vec<&Item>) -> Vec<&Item> {
    let rank = |i: &Item| match (coordinate::is_synapse_workload(i), i.name.as_str()) {
        (false, _) => 0,
        (true, coordinate::SYNAPSE_MAIN) => 1,
        (true, _) => 2,
    };
    let mut objects = objects;
    objects.sort_by_key(|i| rank(i));
    objects
}

/// Applies every Synapse workload of the phase at 0 replicas (with its new template) and waits
/// until its pods are gone: no old process runs beside a new one.
async fn scale_to_zero(
    cluster: &Cluster,
    objects: &[&Item],
    id: &str,
    opts: Options,
    on: &mut dyn FnMut(Event),
) -> Result<(), (String, Error)> {
    let workloads: Vec<Item> = objects
        .iter()
        .filter(|i| coordinate::is_synapse_workload(i))
        .map(|i| prune::labelled(&coordinate::at_zero(i), id))
        .collect();
    for w in &workloads {
        apply_one(cluster, w, opts).await.map_err(|e| (w.id(), e))?;
    }
    for w in &workloads {
        let took = coordinate::wait_stopped(cluster, w, opts.wait.timeout, opts.wait.poll)
            .await
            .map_err(|e| (w.id(), e))?;
        on(Event::ScaledToZero {
            object: w.id(),
            elapsed_s: secs(took),
        });
    }
    Ok(())
}

async fn apply_one(cluster: &Cluster, item: &Item, opts: Options) -> Result<apply::Applied, Error> {
    let a = ApplyOptions {
        dry_run: opts.dry_run,
        force_conflicts: opts.force_conflicts,
    };
    match apply::apply(cluster, item, a).await {
        // A Job's template cannot change; mxstack's Jobs are idempotent setup steps, so a new
        // template (an upgrade's image) replaces the Job, as `kubectl replace --force` would.
        Err(Error::Api { code: 422, message, .. }) if item.kind == "Job" && message.contains("field is immutable") => {
            apply::replace(cluster, item, a, opts.wait.timeout).await
        }
        Err(Error::Api { code: 422, message, object, .. }) if item.kind == "StatefulSet" => Err(Error::Immutable {
            object,
            message,
            fix: "a StatefulSet's volumeClaimTemplates cannot change in place: resize its PersistentVolumeClaims with `kubectl edit pvc`, then `kubectl delete statefulset NAME --cascade=orphan` and deploy again (docs/DEPLOY.md: changing volume sizes)".into(),
        }),
        // Under dry run, what an earlier phase would create (a namespace, a CRD) is not there.
        Err(e) if opts.dry_run && (e.is_not_found() || matches!(e, Error::MissingKind { .. })) => {
            Ok(apply::Applied {
                change: Change::Created,
                diff: Vec::new(),
                object: item.value.clone(),
            })
        }
        other => other,
    }
}

/// Waits until `item` is ready, reporting progress, then `Ready`.
async fn wait_ready(
    cluster: &Cluster,
    item: &Item,
    phase: &str,
    opts: WaitOptions,
    on: &mut dyn FnMut(Event),
) -> Result<(), Error> {
    let mut progress = |state: &str, elapsed: Duration| {
        on(Event::Waiting {
            phase: phase.to_string(),
            object: item.id(),
            state: state.to_string(),
            elapsed_s: secs(elapsed),
        })
    };
    let waited = wait::wait(cluster, item, opts, &mut progress).await?;
    on(Event::Ready {
        phase: phase.to_string(),
        object: item.id(),
        elapsed_s: secs(waited),
    });
    Ok(())
}

/// Prune (or list) what left the render, then record exactly what the instance uses now.
#[allow(clippy::too_many_arguments)]
async fn finish(
    cluster: &Cluster,
    items: &[Item],
    home: &str,
    wanted: &Record,
    previous: &Record,
    opts: Options,
    summary: &mut Summary,
    on: &mut dyn FnMut(Event),
) -> Result<(), Error> {
    let all = previous.union(wanted);
    let left: Vec<Leftover> = if opts.dry_run && previous.kinds.is_empty() {
        Vec::new()
    } else {
        prune::leftovers(cluster, home, &all, items).await?
    };
    if !opts.prune {
        summary.leftovers = left.len();
        for l in left {
            on(Event::Leftover { object: l.id() });
        }
        return Ok(());
    }
    for l in &left {
        prune::delete(cluster, l, opts.dry_run).await?;
        summary.pruned += 1;
        on(Event::Pruned {
            object: l.id(),
            dry_run: opts.dry_run,
        });
    }
    if !opts.dry_run {
        prune::record(cluster, home, wanted, false).await?;
    }
    Ok(())
}

fn count(s: &mut Summary, c: Change) {
    match c {
        Change::Created => s.created += 1,
        Change::Configured => s.configured += 1,
        Change::Unchanged => s.unchanged += 1,
    }
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 10.0).round() / 10.0
}
