//! What a component's part of the local plan is made of: the processes it runs ([`Service`],
//! with its [`Readiness`]), the files it writes, and what every part reads ([`Parts`]). Each
//! component's part (`crate::coturn`, the functions in `crate::plan`) imports these, and the plan
//! only calls the parts, so no part imports the plan.

use std::path::PathBuf;

use mxstack_spec::{Config, Secrets};
use mxstack_topology::addressing::SynapsePaths;
use mxstack_topology::Topology;
use serde::Serialize;

use crate::addressing::LocalAddressing;
use crate::layout::StateLayout;
use crate::programs::Programs;

/// How the supervisor knows a process is ready.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Readiness {
    /// Something accepts TCP connections on the port.
    Tcp { port: u16 },
    /// `GET path` answers 200.
    Http { port: u16, path: String },
    /// A Redis-protocol server answers AUTH + PING (the password is read from the secrets).
    Redis { port: u16 },
    /// A one-shot task: ready when it exited 0.
    Exited,
}

#[derive(Debug, Clone, Serialize)]
pub struct Service {
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Environment; values of secret entries are never printed (see `secret_env`).
    #[serde(skip)]
    pub env: Vec<(String, String)>,
    /// Names of env entries that hold secrets.
    pub secret_env: Vec<String>,
    /// Written to the process's stdin (one-shot SQL, shell commands); may hold secrets.
    #[serde(skip)]
    pub stdin: Option<String>,
    /// Run as this system user (PostgreSQL refuses to run as root).
    pub run_as: Option<String>,
    pub readiness: Readiness,
    /// Services that must be ready first.
    pub after: Vec<String>,
    pub one_shot: bool,
    /// The port a person would look at (shown by `status`).
    pub port: Option<u16>,
    /// Skip this one-shot when the path exists (e.g. initdb once).
    pub skip_if_exists: Option<PathBuf>,
    /// How long a SIGTERM may take before SIGKILL.
    pub stop_grace_secs: u64,
    /// The signal that makes it re-read its files without a restart (HAProxy's master
    /// SIGUSR2, Prometheus' SIGHUP): sent when `mxstack scale` changes what it lists.
    pub reload_signal: Option<i32>,
}

impl Service {
    /// A long-running process: no environment, waiting for nothing, 20 s to stop after SIGTERM.
    pub fn process(
        name: String,
        program: PathBuf,
        args: Vec<String>,
        readiness: Readiness,
    ) -> Service {
        Service {
            name,
            program,
            args,
            env: vec![],
            secret_env: vec![],
            stdin: None,
            run_as: None,
            readiness,
            after: vec![],
            one_shot: false,
            port: None,
            skip_if_exists: None,
            stop_grace_secs: 20,
            reload_signal: None,
        }
    }

    /// A one-shot task: done (and ready) when it exits 0.
    pub fn task(name: String, program: PathBuf, args: Vec<String>) -> Service {
        Service {
            one_shot: true,
            ..Service::process(name, program, args, Readiness::Exited)
        }
    }

    /// Started once these are ready.
    pub fn after(mut self, after: Vec<String>) -> Service {
        self.after = after;
        self
    }

    /// Its environment, and which of its variables hold secrets (never printed).
    pub fn env(mut self, env: Vec<(String, String)>, secret_env: Vec<String>) -> Service {
        self.env = env;
        self.secret_env = secret_env;
        self
    }

    /// Re-reads its files on this signal.
    pub fn reloads_on(mut self, signal: i32) -> Service {
        self.reload_signal = Some(signal);
        self
    }

    /// The port `status` shows.
    pub fn shown_port(mut self, port: u16) -> Service {
        self.port = Some(port);
        self
    }

    /// Seconds between SIGTERM and SIGKILL.
    pub fn grace(mut self, secs: u64) -> Service {
        self.stop_grace_secs = secs;
        self
    }

    pub fn stdin(mut self, stdin: String) -> Service {
        self.stdin = Some(stdin);
        self
    }

    pub fn run_as(mut self, user: &str) -> Service {
        self.run_as = Some(user.into());
        self
    }

    pub fn skip_if_exists(mut self, path: PathBuf) -> Service {
        self.skip_if_exists = Some(path);
        self
    }
}

#[derive(Debug, Clone)]
pub struct GeneratedFile {
    pub path: PathBuf,
    pub content: String,
    pub mode: u32,
    /// The user that must own it (a file PostgreSQL's own processes read), else the supervisor's.
    pub owner: Option<&'static str>,
    /// Read again at each use (the escrow module's API key, barman's S3 credentials), not at
    /// start: rewriting it switches its readers, so a rotation restarts none of them for it.
    pub per_use: bool,
}

pub(crate) fn file(path: PathBuf, content: impl Into<String>, mode: u32) -> GeneratedFile {
    GeneratedFile {
        path,
        content: content.into(),
        mode,
        owner: None,
        per_use: false,
    }
}

impl GeneratedFile {
    pub(crate) fn owned_by(mut self, user: &'static str) -> GeneratedFile {
        self.owner = Some(user);
        self
    }

    pub(crate) fn read_per_use(mut self) -> GeneratedFile {
        self.per_use = true;
        self
    }
}

/// What every component's part of the plan reads.
pub(crate) struct Parts<'a> {
    pub config: &'a Config,
    pub secrets: &'a Secrets,
    pub layout: &'a StateLayout,
    pub programs: &'a Programs,
    pub t: &'a Topology,
    pub addr: &'a LocalAddressing,
    pub paths: SynapsePaths,
    pub redis_password: &'a str,
}

/// What the components add: files to write, processes to run (in start order for equal rank).
#[derive(Default)]
pub(crate) struct Out {
    pub files: Vec<GeneratedFile>,
    pub services: Vec<Service>,
}
