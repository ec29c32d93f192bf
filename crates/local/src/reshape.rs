//! `mxstack scale` on the running stack: the supervisor applies a new shape (`crate::shape`).
//! A live change starts and stops only the processes that come and go; a coordinated one stops
//! every Synapse process before any starts, because all must agree on `instance_map` and
//! `stream_writers`. Either way the router then reloads in place with the new server list.

use std::rc::Rc;

use super::Supervisor;
use crate::plan::{LocalPlan, Service};
use crate::status::{ProcessState, ProcessStatus};

/// Synapse processes of main's deployment (not Synapse LI: its own database and streams).
fn synapse_names(plan: &LocalPlan) -> Vec<String> {
    plan.topology
        .processes()
        .into_iter()
        .map(|p| p.name)
        .collect()
}

/// `services` in waves: one per Synapse worker group, in start order; anything else last.
fn waves_by_group<'p>(plan: &LocalPlan, services: Vec<&'p Service>) -> Vec<Vec<&'p Service>> {
    let processes = plan.topology.processes();
    let group = |name: &str| {
        processes
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.group.clone())
    };
    let mut waves: Vec<(Option<String>, Vec<&Service>)> = Vec::new();
    for s in services {
        let g = group(&s.name);
        match waves.iter_mut().find(|(k, _)| *k == g) {
            Some((_, w)) => w.push(s),
            None => waves.push((g, vec![s])),
        }
    }
    // Not a Synapse process (none today): after the workers.
    waves.sort_by_key(|(g, _)| g.is_none());
    waves.into_iter().map(|(_, w)| w).collect()
}

impl Supervisor<'_> {
    pub(super) fn reshape(
        &mut self,
        coordinated: bool,
        done: &mut Vec<String>,
    ) -> Result<(), String> {
        let old = Rc::clone(&self.plan);
        let mut stopped = Vec::new();
        if coordinated {
            let synapse = synapse_names(&old);
            for s in old.start_order().into_iter().rev() {
                if synapse.contains(&s.name) {
                    if let Some(r) = self.running.remove(&s.name) {
                        self.terminate(&s.name, r);
                        stopped.push(s.name.clone());
                    }
                }
            }
            done.push(format!("stopped every Synapse process ({})", stopped.len()));
        }
        let changed = self.reload()?;
        done.push(format!("reloaded: {changed} files rewritten"));
        let new = Rc::clone(&self.plan);
        self.sync_status_entries();
        // Every long-running process that is not running and not in the watcher's backoff: the
        // new ones, those stopped above, and those an interrupted reshape left unstarted (so a
        // re-run finishes it). Main first (a worker connects to its replication listener at
        // start), then the rest together.
        let main = synapse_names(&new).into_iter().next();
        let idle = |name: &str| {
            !self.running.contains_key(name)
                && self.status.processes.iter().any(|p| {
                    p.name == name
                        && matches!(
                            p.state,
                            ProcessState::Waiting | ProcessState::Failed | ProcessState::Stopped
                        )
                })
        };
        let (first, rest): (Vec<_>, Vec<_>) = new
            .start_order()
            .into_iter()
            .filter(|s| !s.one_shot && idle(&s.name))
            .partition(|s| Some(&s.name) == main.as_ref());
        for s in &first {
            self.start_and_wait(s)?;
            done.push(format!("started {}", s.name));
        }
        // Then the workers group by group, each group's processes together, ready before the
        // next group starts (what Synapse's upgrade notes ask after a migration).
        for wave in waves_by_group(&new, rest) {
            self.start_wave(&wave)?;
            done.extend(wave.iter().map(|s| format!("started {}", s.name)));
        }
        // The router drops the removed servers before they stop, so no request is sent to
        // a process on its way out.
        done.extend(self.signal_reloads(&new));
        for s in old.start_order().into_iter().rev() {
            if new.service(&s.name).is_none() {
                if let Some(r) = self.running.remove(&s.name) {
                    self.terminate(&s.name, r);
                }
                done.push(format!("removed {}", s.name));
            }
        }
        Ok(())
    }

    /// Status entries follow the plan: new processes appear waiting, removed ones go.
    fn sync_status_entries(&mut self) {
        let plan = Rc::clone(&self.plan);
        self.status
            .processes
            .retain(|p| plan.service(&p.name).is_some());
        for s in &plan.services {
            if !self.status.processes.iter().any(|p| p.name == s.name) {
                self.status
                    .processes
                    .push(ProcessStatus::waiting(&s.name, s.port));
            }
        }
        let _ = self.status.save(&self.layout.status_file());
    }

    /// Signals every running process that re-reads its files in place.
    fn signal_reloads(&mut self, plan: &LocalPlan) -> Vec<String> {
        let mut out = Vec::new();
        for s in &plan.services {
            let (Some(sig), Some(r)) = (s.reload_signal, self.running.get(&s.name)) else {
                continue;
            };
            // SAFETY: signalling our own child process.
            unsafe {
                libc::kill(r.child.id() as i32, sig);
            }
            out.push(format!("reloaded {}", s.name));
        }
        for line in &out {
            self.say(line);
        }
        out
    }
}
