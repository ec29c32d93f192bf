//! PostgreSQL connection budget (seed 004 issue 2.3): the sum of `cp_max` over every process that can
//! exist (autoscaler maxima included) stays within 85% of `max_connections`; the other 15% is left for
//! CloudNativePG, replication, backups and an operator's psql.

use serde::Serialize;

use crate::sizing::Sizing;
use crate::workers::{WorkerGroup, WorkerKind};

pub const BUDGET_SHARE_PERCENT: u32 = 85;
/// Connections a process never goes below (Synapse's own default cp_min).
pub const CP_MIN: u32 = 5;
/// A process gains nothing from more than this many connections.
pub const CP_MAX_CAP: u32 = 50;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PoolLimit {
    /// `main` or a worker group name.
    pub group: String,
    pub processes_max: u32,
    pub cp_min: u32,
    pub cp_max: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConnectionBudget {
    pub max_connections: u32,
    /// 85% of max_connections.
    pub budget: u32,
    pub pools: Vec<PoolLimit>,
    /// Sum of cp_max x processes over all pools: never above `budget`.
    pub total_cp_max: u32,
}

/// Writers and main do more database work per process than readers.
fn weight(kind: Option<WorkerKind>) -> u32 {
    match kind {
        None | Some(WorkerKind::EventPersister) => 2,
        _ => 1,
    }
}

impl ConnectionBudget {
    pub fn compute(sizing: &Sizing, groups: &[WorkerGroup]) -> ConnectionBudget {
        let members: Vec<(String, Option<WorkerKind>, u32)> =
            std::iter::once(("main".to_string(), None, 1))
                .chain(
                    groups
                        .iter()
                        .map(|g| (g.name.clone(), Some(g.kind), g.max_replicas)),
                )
                .collect();
        let weighted: u32 = members.iter().map(|(_, k, n)| weight(*k) * n).sum();
        let mut max_connections = sizing.postgres.max_connections;
        // Raise max_connections when the floor of CP_MIN per process would not fit.
        loop {
            let budget = max_connections * BUDGET_SHARE_PERCENT / 100;
            let per_weight = budget / weighted.max(1);
            if per_weight >= CP_MIN {
                let pools: Vec<PoolLimit> = members
                    .iter()
                    .map(|(name, kind, n)| {
                        let cp_max = (per_weight * weight(*kind)).min(CP_MAX_CAP);
                        PoolLimit {
                            group: name.clone(),
                            processes_max: *n,
                            cp_min: CP_MIN.min(cp_max),
                            cp_max,
                        }
                    })
                    .collect();
                let total_cp_max = pools.iter().map(|p| p.cp_max * p.processes_max).sum();
                return ConnectionBudget {
                    max_connections,
                    budget,
                    pools,
                    total_cp_max,
                };
            }
            max_connections += 50;
        }
    }

    pub fn for_group(&self, group: &str) -> &PoolLimit {
        self.pools
            .iter()
            .find(|p| p.group == group)
            .expect("every group has a pool limit")
    }
}
