//! The supervisor's view of the stack, written to `status.json` on every change (atomically), and
//! read by `mxstack status`.

use std::path::Path;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessState {
    Waiting,
    Starting,
    Ready,
    /// A one-shot task that finished.
    Done,
    /// Crashed; will be restarted after a backoff.
    Restarting,
    Failed,
    Stopping,
    Stopped,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessStatus {
    pub name: String,
    pub pid: Option<u32>,
    pub state: ProcessState,
    pub restarts: u32,
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<String>,
}

impl ProcessStatus {
    /// A process not started yet, shown on `port`.
    pub fn waiting(name: &str, port: Option<u16>) -> ProcessStatus {
        ProcessStatus {
            name: name.to_string(),
            pid: None,
            state: ProcessState::Waiting,
            restarts: 0,
            port,
            last_exit: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StackStatus {
    pub supervisor_pid: u32,
    /// `starting`, `ready`, `failed`, `stopping`, `stopped`.
    pub phase: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub client_url: String,
    pub postgres_dsn: String,
    pub s3_endpoint: String,
    pub s3_bucket: String,
    pub processes: Vec<ProcessStatus>,
}

impl StackStatus {
    pub fn load(path: &Path) -> Option<StackStatus> {
        serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
    }

    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("json.tmp");
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(self).expect("status serializes"),
        )?;
        std::fs::rename(tmp, path)
    }
}

/// Whether a pid is alive (signal 0).
pub fn alive(pid: u32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence and permission.
    unsafe { libc::kill(pid as i32, 0) == 0 }
}
