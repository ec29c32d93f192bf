//! Worker groups and processes: which Synapse processes exist and what each one does.

use mxstack_spec::{Component, Config, Feature, Tier};
use serde::Serialize;

use crate::sizing::{Resources, Sizing};

/// Name of the main process in `instance_map` and `stream_writers`.
pub const MAIN_INSTANCE: &str = "main";
/// Name of the main process's pod / local process.
pub const MAIN_PROCESS: &str = "synapse-main";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerKind {
    /// /sync, /events, initialSync: sticky per user.
    Synchrotron,
    /// Client reads, event sending, federation inbound.
    Generic,
    MediaRepository,
    EventPersister,
    FederationSender,
    Pusher,
    /// Background tasks, user directory, appservice notifications.
    Background,
    /// Single-writer streams (typing, to_device, ...).
    StreamWriter,
}

impl WorkerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerKind::Synchrotron => "synchrotron",
            WorkerKind::Generic => "generic",
            WorkerKind::MediaRepository => "media",
            WorkerKind::EventPersister => "event-persister",
            WorkerKind::FederationSender => "federation-sender",
            WorkerKind::Pusher => "pusher",
            WorkerKind::Background => "background",
            WorkerKind::StreamWriter => "stream-writer",
        }
    }

    pub fn component(self) -> Component {
        match self {
            WorkerKind::Synchrotron => Component::Synchrotron,
            WorkerKind::Generic => Component::Generic,
            WorkerKind::MediaRepository => Component::MediaRepository,
            WorkerKind::EventPersister => Component::EventPersister,
            WorkerKind::FederationSender => Component::FederationSender,
            WorkerKind::Pusher => Component::Pusher,
            WorkerKind::Background => Component::Background,
            WorkerKind::StreamWriter => Component::StreamWriter,
        }
    }

    /// Adding a process of these kinds needs no restart of any other process, so an autoscaler may
    /// add them (seed 004 issue 5.3: never event persisters or federation senders).
    pub fn autoscalable(self) -> bool {
        matches!(self, WorkerKind::Synchrotron | WorkerKind::Generic)
    }

    /// Whether other processes must reach this one over HTTP replication (needs an instance_map entry).
    pub fn needs_replication_listener(self) -> bool {
        matches!(
            self,
            WorkerKind::EventPersister | WorkerKind::StreamWriter | WorkerKind::MediaRepository
        )
    }

    /// Serves client or federation HTTP traffic routed by HAProxy.
    pub fn serves_http(self) -> bool {
        !matches!(
            self,
            WorkerKind::EventPersister
                | WorkerKind::FederationSender
                | WorkerKind::Pusher
                | WorkerKind::Background
        )
    }
}

/// Synapse replication streams with a configurable writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    Events,
    Typing,
    ToDevice,
    AccountData,
    Receipts,
    Presence,
    PushRules,
    DeviceLists,
    ThreadSubscriptions,
    QuarantinedMediaChanges,
}

impl Stream {
    pub const ALL: [Stream; 10] = [
        Stream::Events,
        Stream::Typing,
        Stream::ToDevice,
        Stream::AccountData,
        Stream::Receipts,
        Stream::Presence,
        Stream::PushRules,
        Stream::DeviceLists,
        Stream::ThreadSubscriptions,
        Stream::QuarantinedMediaChanges,
    ];

    /// Streams moved off main to stream-writer workers, in this order.
    pub const OFFLOADED: [Stream; 7] = [
        Stream::Typing,
        Stream::ToDevice,
        Stream::AccountData,
        Stream::Receipts,
        Stream::Presence,
        Stream::PushRules,
        Stream::DeviceLists,
    ];

    pub fn key(self) -> &'static str {
        match self {
            Stream::Events => "events",
            Stream::Typing => "typing",
            Stream::ToDevice => "to_device",
            Stream::AccountData => "account_data",
            Stream::Receipts => "receipts",
            Stream::Presence => "presence",
            Stream::PushRules => "push_rules",
            Stream::DeviceLists => "device_lists",
            Stream::ThreadSubscriptions => "thread_subscriptions",
            Stream::QuarantinedMediaChanges => "quarantined_media_changes",
        }
    }

    /// Synapse accepts exactly one writer for these.
    pub fn single_writer(self) -> bool {
        matches!(
            self,
            Stream::Typing
                | Stream::ToDevice
                | Stream::AccountData
                | Stream::Presence
                | Stream::PushRules
        )
    }
}

/// A set of identical processes (one StatefulSet in Kubernetes).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkerGroup {
    /// Group name, e.g. `synchrotron` or `stream-writer-typing`.
    pub name: String,
    pub kind: WorkerKind,
    pub replicas: u32,
    /// Highest replica count an autoscaler may reach (equals `replicas` when not autoscaled).
    pub max_replicas: u32,
    /// Streams this group writes (event persisters: events; stream writers: their streams).
    pub streams: Vec<Stream>,
    pub resources: Resources,
}

impl WorkerGroup {
    pub fn autoscaled(&self) -> bool {
        self.kind.autoscalable() && self.max_replicas > self.replicas
    }

    /// Kubernetes object name / process name prefix, e.g. `synapse-synchrotron`.
    pub fn object_name(&self) -> String {
        format!("synapse-{}", self.name)
    }

    pub fn process_name(&self, ordinal: u32) -> String {
        format!("synapse-{}-{}", self.name, ordinal)
    }
}

/// One Synapse process: main or one worker instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SynapseProcess {
    /// Process / pod name, also the worker_name (instance name) for workers.
    pub name: String,
    /// Group name; `main` for the main process.
    pub group: String,
    pub kind: Option<WorkerKind>,
    pub ordinal: u32,
    pub initial_replicas: u32,
}

impl SynapseProcess {
    pub fn is_main(&self) -> bool {
        self.kind.is_none()
    }

    /// The name other processes use for this one in instance_map / stream_writers.
    pub fn instance_name(&self) -> &str {
        if self.is_main() {
            MAIN_INSTANCE
        } else {
            &self.name
        }
    }
}

/// Replica counts per tier: (replicas, autoscaler max). From seed 003's component breakdown
/// (100 CCU: 2 sync, 2 generic, 2 event persisters, 2 federation; 20K: 18/8/4/8), interpolated.
fn counts(kind: WorkerKind, tier: Tier) -> (u32, u32) {
    use Tier::*;
    use WorkerKind::*;
    match (kind, tier) {
        (Synchrotron, T100) => (2, 4),
        (Synchrotron, T1k) => (4, 8),
        (Synchrotron, T5k) => (8, 16),
        (Synchrotron, T10k) => (12, 20),
        (Synchrotron, T20k) => (18, 24),
        (Generic, T100) => (2, 4),
        (Generic, T1k) => (4, 8),
        (Generic, T5k) => (4, 8),
        (Generic, T10k) => (6, 12),
        (Generic, T20k) => (8, 16),
        (MediaRepository, T100 | T1k) => (2, 2),
        (MediaRepository, T5k) => (3, 3),
        (MediaRepository, T10k | T20k) => (4, 4),
        (EventPersister, T100 | T1k | T5k) => (2, 2),
        (EventPersister, T10k | T20k) => (4, 4),
        (FederationSender, T100 | T1k) => (2, 2),
        (FederationSender, T5k) => (4, 4),
        (FederationSender, T10k) => (6, 6),
        (FederationSender, T20k) => (8, 8),
        (Pusher, T100 | T1k) => (1, 1),
        (Pusher, _) => (2, 2),
        (Background, _) => (1, 1),
        (StreamWriter, _) => (1, 1),
    }
}

/// The worker groups for a config: tier counts, features, then per-component overrides.
pub fn groups(config: &Config, sizing: &Sizing) -> Vec<WorkerGroup> {
    let tier = config.scale;
    let mut out = Vec::new();
    let mut push = |name: String, kind: WorkerKind, streams: Vec<Stream>| {
        let (mut replicas, mut max) = counts(kind, tier);
        let o = config.override_for(kind.component());
        if let Some(r) = o.replicas {
            replicas = r.max(1);
            max = max.max(replicas);
        }
        if kind.autoscalable() {
            if let Some(m) = o.max_replicas {
                max = m.max(replicas);
            }
        } else {
            max = replicas;
        }
        // Single-writer streams cannot be sharded: their writer group is always one process.
        if streams.iter().any(|s| s.single_writer()) {
            replicas = 1;
            max = 1;
        }
        let resources = sizing.resources_for(kind.component(), config);
        out.push(WorkerGroup {
            name,
            kind,
            replicas,
            max_replicas: max,
            streams,
            resources,
        });
    };
    push("synchrotron".into(), WorkerKind::Synchrotron, vec![]);
    push("generic".into(), WorkerKind::Generic, vec![]);
    push(
        "media".into(),
        WorkerKind::MediaRepository,
        vec![Stream::QuarantinedMediaChanges],
    );
    push(
        "event-persister".into(),
        WorkerKind::EventPersister,
        vec![Stream::Events],
    );
    if config.has(Feature::Federation) {
        push(
            "federation-sender".into(),
            WorkerKind::FederationSender,
            vec![],
        );
    }
    push("pusher".into(), WorkerKind::Pusher, vec![]);
    push("background".into(), WorkerKind::Background, vec![]);
    // Small tiers share one writer for all offloaded streams; large tiers give each its own process.
    if tier >= Tier::T10k {
        for s in Stream::OFFLOADED {
            push(
                format!("stream-{}", s.key().replace('_', "-")),
                WorkerKind::StreamWriter,
                vec![s],
            );
        }
    } else {
        push(
            "stream-writer".into(),
            WorkerKind::StreamWriter,
            Stream::OFFLOADED.to_vec(),
        );
    }
    out
}

pub fn processes(groups: &[WorkerGroup]) -> Vec<SynapseProcess> {
    let mut out = vec![SynapseProcess {
        name: MAIN_PROCESS.to_string(),
        group: MAIN_INSTANCE.to_string(),
        kind: None,
        ordinal: 0,
        initial_replicas: 1,
    }];
    for g in groups {
        for i in 0..g.max_replicas {
            out.push(SynapseProcess {
                name: g.process_name(i),
                group: g.name.clone(),
                kind: Some(g.kind),
                ordinal: i,
                initial_replicas: g.replicas,
            });
        }
    }
    out
}

/// Writers of each stream, as instance names (main when no group writes it).
pub fn stream_writers(groups: &[WorkerGroup]) -> Vec<(Stream, Vec<String>)> {
    Stream::ALL
        .into_iter()
        .map(|s| {
            let mut writers = Vec::new();
            for g in groups.iter().filter(|g| g.streams.contains(&s)) {
                // Only the first media worker writes quarantined_media_changes: it also runs the
                // media background jobs.
                let n = if s == Stream::QuarantinedMediaChanges {
                    1
                } else {
                    g.max_replicas
                };
                writers.extend((0..n).map(|i| g.process_name(i)));
            }
            if writers.is_empty() {
                writers.push(MAIN_INSTANCE.to_string());
            }
            (s, writers)
        })
        .collect()
}

/// Processes that need an `instance_map` entry: main plus every stream writer.
pub fn instance_map_members(groups: &[WorkerGroup]) -> Vec<String> {
    let mut names = vec![MAIN_INSTANCE.to_string()];
    for (_, writers) in stream_writers(groups) {
        for w in writers {
            if !names.contains(&w) {
                names.push(w);
            }
        }
    }
    names
}
