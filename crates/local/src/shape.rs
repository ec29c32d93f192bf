//! The running stack's shape: its port block, how many processes each Synapse worker group has,
//! and the order in which the Synapse processes got their ports. `up` writes it, `mxstack scale`
//! changes it, and every command that rebuilds the plan of a running stack (verify, rotate,
//! restore, upgrade, the supervisor's reload) reads it: the one record of what runs.

use std::collections::BTreeMap;
use std::path::Path;

use mxstack_spec::Component;
use serde::{Deserialize, Serialize};

/// The groups `up --replicas` sets, and whether the autoscaler may grow them (Kubernetes).
pub const SCALABLE: [(Component, bool); 6] = [
    (Component::Synchrotron, true),
    (Component::Generic, true),
    (Component::MediaRepository, false),
    (Component::EventPersister, false),
    (Component::FederationSender, false),
    (Component::Pusher, false),
];

/// Most processes one group may have on one machine (`mxstack scale`).
pub const MAX_LOCAL_PROCESSES: u32 = 8;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shape {
    pub base_port: u16,
    /// `up --replicas`: processes per scalable group (0: Synapse as one process).
    pub replicas: u32,
    /// Groups changed from `replicas` by `mxstack scale`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub groups: BTreeMap<Component, u32>,
    /// Synapse processes in the order their ports were handed out. A process keeps its ports
    /// for the life of the stack, and one added later is appended, so scaling moves no port of
    /// a process that keeps running.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub order: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ShapeError {
    #[error("cannot read {0}: {1}")]
    Read(String, std::io::Error),
    #[error("{0} is not a stack shape ({1}); it is written by `mxstack up`")]
    Parse(String, serde_json::Error),
    #[error("cannot write {0}: {1}")]
    Write(String, std::io::Error),
}

impl Shape {
    pub fn new(base_port: u16, replicas: u32) -> Shape {
        Shape {
            base_port,
            replicas,
            groups: BTreeMap::new(),
            order: Vec::new(),
        }
    }

    /// The processes of `component`'s group.
    pub fn replicas_of(&self, component: Component) -> u32 {
        self.groups
            .get(&component)
            .copied()
            .unwrap_or(self.replicas)
    }

    /// The allocation order for the processes that run now: the recorded order (a removed
    /// process keeps its place, so nobody moves into its ports), then new ones in `names`' order.
    pub fn allocation_order(&self, names: &[String]) -> Vec<String> {
        let mut order = self.order.clone();
        for n in names {
            if !order.contains(n) {
                order.push(n.clone());
            }
        }
        order
    }

    pub fn load(path: &Path) -> Result<Option<Shape>, ShapeError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(ShapeError::Read(path.display().to_string(), e)),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| ShapeError::Parse(path.display().to_string(), e))
    }

    /// Written whole to a temporary file and renamed: a crash leaves the old shape or the new.
    pub fn save(&self, path: &Path) -> Result<(), ShapeError> {
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(self).expect("shape serializes");
        std::fs::write(&tmp, text)
            .and_then(|_| std::fs::rename(&tmp, path))
            .map_err(|e| ShapeError::Write(path.display().to_string(), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_removed_process_keeps_its_place_and_a_new_one_is_appended() {
        let mut s = Shape::new(20000, 1);
        s.order = ["synapse-main", "synapse-synchrotron-0", "synapse-generic-0"]
            .map(String::from)
            .to_vec();
        let now = ["synapse-main", "synapse-synchrotron-1", "synapse-generic-0"].map(String::from);
        assert_eq!(
            s.allocation_order(&now),
            [
                "synapse-main",
                "synapse-synchrotron-0",
                "synapse-generic-0",
                "synapse-synchrotron-1"
            ]
        );
    }

    #[test]
    fn an_old_record_without_groups_or_order_still_reads() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("up-args.json");
        std::fs::write(&p, r#"{"replicas": 2, "base_port": 21000}"#).unwrap();
        let s = Shape::load(&p).unwrap().unwrap();
        assert_eq!(s, Shape::new(21000, 2));
        assert_eq!(s.replicas_of(Component::EventPersister), 2);
        let mut t = s.clone();
        t.groups.insert(Component::EventPersister, 3);
        t.save(&p).unwrap();
        assert_eq!(Shape::load(&p).unwrap().unwrap(), t);
        assert!(Shape::load(&dir.path().join("none.json"))
            .unwrap()
            .is_none());
    }
}
