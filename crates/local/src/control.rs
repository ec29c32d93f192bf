//! The running supervisor's control channel: `mxstack rotate` writes a [`Request`] into the
//! state directory and sends SIGHUP; the supervisor performs its actions in order and writes an
//! [`Outcome`] with the same id. Files, not a socket: the supervisor already owns the state
//! directory, and a request survives the CLI being interrupted (the journal re-sends it).
//!
//! Neither file ever holds a secret value: the supervisor reads secrets.yaml itself.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mxstack_topology::valkey::SENTINEL_MASTER_NAME;
use mxstack_topology::Addressing;
use serde::{Deserialize, Serialize};

use crate::layout::StateLayout;
use crate::plan::LocalPlan;

/// One thing the supervisor does for a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "do", content = "names")]
pub enum Action {
    /// Re-read the config and secrets.yaml, rebuild the plan, rewrite the files that changed.
    Reload,
    /// Restart these long-running processes one at a time, in start order, each ready before
    /// the next stops (a rolling restart). A process not running is left to the watcher, which
    /// starts it from the rebuilt plan.
    Restart(Vec<String>),
    /// Run these one-shot tasks again (e.g. `postgres-setup`, which sets the role's password).
    Run(Vec<String>),
    /// Send SIGHUP to these running processes: SeaweedFS re-reads its S3 identities (s3.json).
    Hup(Vec<String>),
    /// Every Valkey instance accepts the new password besides the old one (ACL), replicas and
    /// Sentinels authenticate with the new one.
    ValkeyAccept,
    /// Every Valkey instance accepts the new password only.
    ValkeyRetire,
    /// Apply the shape `mxstack scale` recorded: rebuild the plan, stop the processes it no
    /// longer has, start the new ones, and signal those that reload in place (the router).
    /// `coordinated`: every Synapse process stops before any starts (the stream writers or
    /// sharded instances changed, and all must agree on the lists).
    Reshape { coordinated: bool },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub id: u64,
    pub actions: Vec<Action>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub id: u64,
    pub ok: bool,
    pub error: Option<String>,
    /// What was done, in order (process names, actions): for the operator, never a value.
    pub done: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("the local stack is not running (no live supervisor); start it with `mxstack up`")]
    NotRunning,
    #[error("cannot write the control request {0}: {1}")]
    Write(PathBuf, std::io::Error),
    #[error("the supervisor did not answer request {id} within {secs}s; see {log}")]
    Timeout { id: u64, secs: u64, log: PathBuf },
    #[error("the supervisor failed: {0}")]
    Failed(String),
    #[error("Valkey: {0}")]
    Valkey(String),
}

pub fn request_file(layout: &StateLayout) -> PathBuf {
    layout.root.join("control-request.json")
}

pub fn outcome_file(layout: &StateLayout) -> PathBuf {
    layout.root.join("control-outcome.json")
}

/// Reads the pending request (the supervisor, on SIGHUP).
pub fn read_request(layout: &StateLayout) -> Option<Request> {
    let text = std::fs::read_to_string(request_file(layout)).ok()?;
    serde_json::from_str(&text).ok()
}

pub fn write_outcome(layout: &StateLayout, outcome: &Outcome) -> std::io::Result<()> {
    let tmp = outcome_file(layout).with_extension("tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec(outcome).expect("outcome serializes"),
    )?;
    std::fs::rename(tmp, outcome_file(layout))
}

/// Sends `actions` to the supervisor `pid` and waits for its outcome.
pub fn send(
    layout: &StateLayout,
    pid: u32,
    actions: Vec<Action>,
    timeout: Duration,
) -> Result<Outcome, ControlError> {
    let id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    let req = Request { id, actions };
    let path = request_file(layout);
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(&req).expect("request serializes"))
        .and_then(|_| std::fs::rename(&tmp, &path))
        .map_err(|e| ControlError::Write(path.clone(), e))?;
    // SAFETY: signalling the supervisor of this stack (its pid file); SIGHUP only sets a flag.
    if unsafe { libc::kill(pid as i32, libc::SIGHUP) } != 0 {
        return Err(ControlError::NotRunning);
    }
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        let got = std::fs::read_to_string(outcome_file(layout))
            .ok()
            .and_then(|t| serde_json::from_str::<Outcome>(&t).ok());
        if let Some(o) = got.filter(|o| o.id == id) {
            return match &o.error {
                Some(e) if !o.ok => Err(ControlError::Failed(e.clone())),
                _ => Ok(o),
            };
        }
        if !crate::status::alive(pid) {
            return Err(ControlError::NotRunning);
        }
    }
    Err(ControlError::Timeout {
        id,
        secs: timeout.as_secs(),
        log: layout.supervisor_log(),
    })
}

/// A reply of a Redis-protocol server: `+OK`/`:1`/bulk text, or an error line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Ok(String),
    Err(String),
}

/// Sends `commands` over one connection and returns one reply per command (simple strings,
/// integers, errors and bulk strings; what AUTH, ACL and CONFIG answer).
pub fn redis_call(port: u16, commands: &[Vec<&str>]) -> Result<Vec<Reply>, String> {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("cannot connect to 127.0.0.1:{port}: {e}"))?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut out = Vec::new();
    for c in commands {
        out.extend(format!("*{}\r\n", c.len()).into_bytes());
        for a in c {
            out.extend(format!("${}\r\n{a}\r\n", a.len()).into_bytes());
        }
    }
    s.write_all(&out).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        if let Some(replies) = parse_replies(&buf, commands.len()) {
            return Ok(replies);
        }
        match s.read(&mut chunk) {
            Ok(0) => return Err(format!("127.0.0.1:{port} closed the connection")),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("127.0.0.1:{port}: {e}")),
        }
    }
}

/// `n` replies from `buf`, or None while incomplete.
fn parse_replies(buf: &[u8], n: usize) -> Option<Vec<Reply>> {
    let text = String::from_utf8_lossy(buf);
    let mut rest = text.as_ref();
    let mut replies = Vec::new();
    while replies.len() < n {
        let (line, after) = rest.split_once("\r\n")?;
        rest = after;
        let (kind, body) = line.split_at(line.len().min(1));
        replies.push(match kind {
            "-" => Reply::Err(body.to_string()),
            "$" if body == "-1" => Reply::Ok(String::new()),
            "$" => {
                let len: usize = body.parse().ok()?;
                if rest.len() < len + 2 {
                    return None;
                }
                let (data, after) = rest.split_at(len);
                rest = &after[2..];
                Reply::Ok(data.to_string())
            }
            _ => Reply::Ok(body.to_string()),
        });
    }
    Some(replies)
}

/// AUTH with the first password the server accepts, then `commands`; every reply must be OK.
/// Errors never hold a password (a server's error line is redacted of both).
fn authed(port: u16, passwords: &[&str], command: Vec<&str>) -> Result<(), ControlError> {
    let redact = |m: String| {
        passwords
            .iter()
            .fold(m, |m, p| if p.is_empty() { m } else { m.replace(p, "***") })
    };
    for pw in passwords.iter().filter(|p| !p.is_empty()) {
        let replies = redis_call(port, &[vec!["AUTH", pw], command.clone()])
            .map_err(|e| ControlError::Valkey(redact(e)))?;
        match replies.as_slice() {
            [Reply::Err(_), _] => continue,
            [Reply::Ok(_), Reply::Ok(_)] => return Ok(()),
            [_, Reply::Err(e)] => {
                return Err(ControlError::Valkey(format!(
                    "127.0.0.1:{port} refused {}: {}",
                    command[0],
                    redact(e.clone())
                )))
            }
            _ => {}
        }
    }
    Err(ControlError::Valkey(format!(
        "127.0.0.1:{port} accepts neither the new nor the previous password"
    )))
}

/// Every instance accepts the new password as well (ACL keeps both), replicas authenticate to
/// the master with it, and every Sentinel uses it. No instance restarts.
pub fn valkey_accept(plan: &LocalPlan) -> Result<Vec<String>, ControlError> {
    let new = plan.redis_password.as_str();
    let old = plan.redis_password_previous.as_deref().unwrap_or("");
    let add = format!(">{new}");
    let n = plan.topology.sizing.redis.instances;
    let mut done = Vec::new();
    for i in 0..n {
        let port = plan.addressing.redis_instance(i).port;
        authed(
            port,
            &[new, old],
            vec!["ACL", "SETUSER", "default", "on", &add],
        )?;
        authed(port, &[new, old], vec!["CONFIG", "SET", "masterauth", new])?;
        done.push(format!("valkey-{i}: accepts the new password"));
    }
    for i in 0..n {
        let port = plan.addressing.sentinel(i).port;
        let r = redis_call(
            port,
            &[vec![
                "SENTINEL",
                "SET",
                SENTINEL_MASTER_NAME,
                "auth-pass",
                new,
            ]],
        )
        .map_err(ControlError::Valkey)?;
        if let Some(Reply::Err(e)) = r.first() {
            return Err(ControlError::Valkey(format!(
                "sentinel-{i} refused SENTINEL SET: {}",
                e.replace(new, "***")
            )));
        }
        done.push(format!("sentinel-{i}: uses the new password"));
    }
    Ok(done)
}

/// Every instance accepts the new password only (`resetpass` drops every other one).
pub fn valkey_retire(plan: &LocalPlan) -> Result<Vec<String>, ControlError> {
    let new = plan.redis_password.as_str();
    let set = format!(">{new}");
    let n = plan.topology.sizing.redis.instances;
    let mut done = Vec::new();
    for i in 0..n {
        let port = plan.addressing.redis_instance(i).port;
        authed(
            port,
            &[new],
            vec!["ACL", "SETUSER", "default", "on", "resetpass", &set],
        )?;
        done.push(format!("valkey-{i}: accepts the new password only"));
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_parse_when_complete_only() {
        let buf = b"+OK\r\n-WRONGPASS invalid\r\n$3\r\nabc\r\n:1\r\n";
        assert_eq!(
            parse_replies(buf, 4).unwrap(),
            vec![
                Reply::Ok("OK".into()),
                Reply::Err("WRONGPASS invalid".into()),
                Reply::Ok("abc".into()),
                Reply::Ok("1".into())
            ]
        );
        assert!(parse_replies(b"+OK\r\n$5\r\nab", 2).is_none());
    }

    #[test]
    fn requests_roundtrip_without_values() {
        let r = Request {
            id: 7,
            actions: vec![
                Action::Reload,
                Action::Restart(vec!["coturn".into()]),
                Action::ValkeyAccept,
            ],
        };
        let text = serde_json::to_string(&r).unwrap();
        assert!(
            text.contains(r#"{"do":"restart","names":["coturn"]}"#),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), r);
    }
}
