//! Where runtime state lives: data, sockets, logs, pids and generated files, all under one directory.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct StateLayout {
    pub root: PathBuf,
}

impl StateLayout {
    /// `--state DIR`, or `.mxstack-state` next to the config file.
    pub fn for_config(config: &Path, state: Option<&Path>) -> StateLayout {
        let root = match state {
            Some(s) => s.to_path_buf(),
            None => config
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .join(".mxstack-state"),
        };
        let root = std::path::absolute(&root).unwrap_or(root);
        StateLayout { root }
    }
    pub fn synapse_root(&self) -> PathBuf {
        self.root.join("synapse")
    }
    pub fn postgres_data(&self) -> PathBuf {
        self.root.join("postgres/data")
    }
    /// The LI replica's cluster (inside the directory handed to the postgres user).
    pub fn li_postgres_data(&self) -> PathBuf {
        self.root.join("postgres/li-data")
    }
    pub fn sockets(&self) -> PathBuf {
        self.root.join("run")
    }
    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }
    pub fn log_file(&self, process: &str) -> PathBuf {
        self.logs().join(format!("{process}.log"))
    }
    pub fn valkey_dir(&self, i: u32) -> PathBuf {
        self.root.join(format!("valkey/{i}"))
    }
    pub fn seaweedfs_dir(&self) -> PathBuf {
        self.root.join("seaweedfs")
    }
    pub fn haproxy_dir(&self) -> PathBuf {
        self.root.join("haproxy")
    }
    pub fn status_file(&self) -> PathBuf {
        self.root.join("status.json")
    }
    pub fn supervisor_pid(&self) -> PathBuf {
        self.root.join("supervisor.pid")
    }
    pub fn supervisor_log(&self) -> PathBuf {
        self.logs().join("supervisor.log")
    }
    /// How the stack was last started (`--replicas`, `--base-port`): `mxstack restore` starts
    /// it again the same way.
    pub fn up_args_file(&self) -> PathBuf {
        self.root.join("up-args.json")
    }

    /// The stack's shape as `up` was given it: (`--base-port`, `--replicas`). The one record
    /// of it: restore, rotate, upgrade and verify rebuild the plan from it.
    pub fn shape(&self) -> Option<crate::Shape> {
        crate::Shape::load(&self.up_args_file()).ok().flatten()
    }
    pub fn ports_file(&self) -> PathBuf {
        self.root.join("ports.json")
    }
}
