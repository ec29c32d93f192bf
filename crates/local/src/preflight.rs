//! What `mxstack up` checks before it starts anything, so that a stack that cannot start fails
//! at once with the cause and the fix, and leaves no process behind: the runtime is installed,
//! every port of the stack's block is free, and PostgreSQL (which runs as `postgres`) can reach
//! the state directory.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::plan::{LocalPlan, Programs};

#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error("the runtime is incomplete: {0} (`mxstack doctor` lists everything)")]
    Runtime(String),
    #[error(
        "port {port} ({what}) is already in use{owner}: this stack needs ports {first}-{last}; \
         pick a free block with --base-port N, or stop what listens there"
    )]
    PortInUse {
        port: u16,
        what: String,
        owner: String,
        first: u16,
        last: u16,
    },
    #[error(
        "PostgreSQL runs as `postgres` and cannot reach the state directory {state}: {blocker} \
         (mode {mode:o}) does not let other users through; use --state under a reachable \
         directory (e.g. /var/lib/mxstack/NAME), or chmod o+x {blocker}"
    )]
    StateUnreachable {
        state: PathBuf,
        blocker: PathBuf,
        mode: u32,
    },
}

/// The programs `up` runs for `config`: the first check, since the plan needs them.
pub fn programs(
    config: &mxstack_spec::Config,
    layout: &crate::StateLayout,
) -> Result<Programs, PreflightError> {
    Programs::for_stack(config, layout).map_err(PreflightError::Runtime)
}

/// The checks on a built plan: its ports, then its state directory.
pub fn check(plan: &LocalPlan, state: &Path) -> Result<(), PreflightError> {
    ports_free(plan)?;
    if crate::runtime::is_root() {
        if let Some((uid, gid)) = crate::runtime::user_ids("postgres") {
            reachable_by(state, uid, gid)?;
        }
    }
    Ok(())
}

/// Binding each port of the block on 127.0.0.1 (std sets SO_REUSEADDR, so a port held only by
/// connections in TIME_WAIT counts as free, as it will for the servers).
pub fn ports_free(plan: &LocalPlan) -> Result<(), PreflightError> {
    let ports = plan.addressing.ports();
    let (first, last) = (plan.addressing.base_port, plan.addressing.last_port());
    for &port in &ports {
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            continue;
        }
        let what = plan
            .services
            .iter()
            .find(|s| s.port == Some(port) || readiness_port(s) == Some(port))
            .map(|s| s.name.clone())
            .unwrap_or_else(|| "in the stack's block".into());
        let owner = match listener_owner(port) {
            Some((pid, name)) => format!(" by pid {pid} ({name})"),
            // Nothing listens: a connection holds it as its local port, which the kernel hands
            // out from its ephemeral range; a block there fails at random.
            None => match ephemeral_range().filter(|r| r.contains(&port)) {
                Some(r) => format!(
                    " (no process listens there: a connection's local port holds it; {}-{} is \
                     the kernel's ephemeral range, so choose a block below {})",
                    r.start(),
                    r.end(),
                    r.start()
                ),
                None => String::new(),
            },
        };
        return Err(PreflightError::PortInUse {
            port,
            what,
            owner,
            first,
            last,
        });
    }
    Ok(())
}

/// The kernel's range of ephemeral (outgoing) ports.
pub fn ephemeral_range() -> Option<std::ops::RangeInclusive<u16>> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut it = text.split_whitespace().map(|n| n.parse::<u16>().ok());
    Some(it.next()??..=it.next()??)
}

fn readiness_port(s: &crate::plan::Service) -> Option<u16> {
    use crate::plan::Readiness;
    match &s.readiness {
        Readiness::Tcp { port } | Readiness::Http { port, .. } | Readiness::Redis { port } => {
            Some(*port)
        }
        Readiness::Exited => None,
    }
}

/// Every existing directory on the way to `state` (and `state` itself, if it exists) must let
/// `uid`/`gid` through; what does not exist yet, `up` creates with mode 0755.
pub fn reachable_by(state: &Path, uid: u32, gid: u32) -> Result<(), PreflightError> {
    let absolute = std::env::current_dir()
        .map(|d| d.join(state))
        .unwrap_or_else(|_| state.to_path_buf());
    let mut dirs: Vec<&Path> = absolute.ancestors().collect();
    dirs.reverse();
    for dir in dirs {
        let Ok(meta) = std::fs::metadata(dir) else {
            break;
        };
        let mode = meta.mode() & 0o7777;
        let through = if meta.uid() == uid {
            mode & 0o100 != 0
        } else if meta.gid() == gid {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        };
        if !through {
            return Err(PreflightError::StateUnreachable {
                state: absolute.clone(),
                blocker: dir.to_path_buf(),
                mode,
            });
        }
    }
    Ok(())
}

/// The process listening on 127.0.0.1/0.0.0.0:`port`, from /proc (best effort: None when it
/// belongs to another user's process we may not inspect).
pub fn listener_owner(port: u16) -> Option<(u32, String)> {
    let inode = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .find_map(|table| {
            let text = std::fs::read_to_string(table).ok()?;
            text.lines().skip(1).find_map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                let local_port = u16::from_str_radix(f.get(1)?.rsplit(':').next()?, 16).ok()?;
                // State 0A: LISTEN.
                (local_port == port && f.get(3) == Some(&"0A"))
                    .then(|| f.get(9).map(|s| s.to_string()))?
            })
        })?;
    let target = format!("socket:[{inode}]");
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy() == target) {
                let name = std::fs::read_to_string(entry.path().join("comm"))
                    .unwrap_or_default()
                    .trim()
                    .to_string();
                return Some((pid, name));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_closed_directory_on_the_way_is_named() {
        let top = tempfile::tempdir().unwrap();
        let closed = top.path().join("closed");
        std::fs::create_dir(&closed).unwrap();
        std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o700)).unwrap();
        let state = closed.join("site/.mxstack-state");
        // A uid and gid that own nothing here.
        let err = reachable_by(&state, 54321, 54321).unwrap_err();
        match err {
            PreflightError::StateUnreachable { blocker, mode, .. } => {
                assert_eq!(blocker, closed);
                assert_eq!(mode, 0o700);
            }
            e => panic!("{e}"),
        }
        std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o711)).unwrap();
        reachable_by(&state, 54321, 54321).unwrap();
    }

    #[test]
    fn the_owner_of_a_listening_port_is_found() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let (pid, _) = listener_owner(port).expect("our own listener");
        assert_eq!(pid, std::process::id());
    }
}
