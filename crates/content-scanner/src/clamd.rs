//! A clamd client that streams: `zINSTREAM` over pooled `zIDSESSION` connections, the data sent
//! in chunks as it arrives, so memory stays bounded whatever the file size and no temp file is
//! ever written.
//!
//! Protocol (clamd(8)): `zIDSESSION\0` opens a session; each `zINSTREAM\0` is followed by chunks
//! `<u32 BE length><bytes>` and a zero-length chunk; the reply is `<id>: stream: OK\0`,
//! `<id>: stream: <name> FOUND\0` or `<id>: ... ERROR\0`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// What clamd said about a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Clean,
    /// The signature that matched.
    Infected(String),
    /// Over the configured limit: refused, never passed on unscanned.
    TooLarge {
        limit: u64,
    },
}

/// No verdict: clamd unreachable, too slow, or speaking nonsense. Never treated as "infected"
/// and never as "clean": the request fails with its own status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanError {
    Unavailable(String),
    Timeout,
    Protocol(String),
}

impl std::fmt::Display for ScanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScanError::Unavailable(e) => write!(f, "clamd unavailable: {e}"),
            ScanError::Timeout => write!(f, "clamd timed out"),
            ScanError::Protocol(e) => write!(f, "clamd protocol error: {e}"),
        }
    }
}

/// Largest chunk sent in one INSTREAM frame (64 KiB is about twice as fast as 4 KiB).
pub const CHUNK: usize = 64 * 1024;
/// A pooled session idle longer than this is dropped (clamd's IdleTimeout is 60 s).
const MAX_IDLE: Duration = Duration::from_secs(30);

struct Session {
    stream: TcpStream,
    last_used: Instant,
    next_id: u64,
}

pub struct Clamd {
    addr: String,
    idle: Mutex<Vec<Session>>,
    slots: std::sync::Arc<Semaphore>,
    timeout: Duration,
}

impl Clamd {
    pub fn new(addr: &str, connections: usize, timeout: Duration) -> Clamd {
        Clamd {
            addr: addr.to_string(),
            idle: Mutex::new(Vec::new()),
            slots: std::sync::Arc::new(Semaphore::new(connections)),
            timeout,
        }
    }

    async fn io<T>(
        &self,
        f: impl std::future::Future<Output = std::io::Result<T>>,
    ) -> Result<T, ScanError> {
        match tokio::time::timeout(self.timeout, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(ScanError::Unavailable(e.to_string())),
            Err(_) => Err(ScanError::Timeout),
        }
    }

    async fn connect(&self) -> Result<Session, ScanError> {
        let mut stream = self.io(TcpStream::connect(&self.addr)).await?;
        let _ = stream.set_nodelay(true);
        self.io(stream.write_all(b"zIDSESSION\0")).await?;
        Ok(Session {
            stream,
            last_used: Instant::now(),
            next_id: 1,
        })
    }

    /// A pooled session that is still open, if any.
    fn take_idle(&self) -> Option<Session> {
        let mut idle = self.idle.lock().expect("pool lock");
        while let Some(s) = idle.pop() {
            if s.last_used.elapsed() > MAX_IDLE {
                continue;
            }
            // Closed by clamd (EOF) or holding stray bytes: not reusable.
            let mut probe = [0u8; 1];
            match s.stream.try_read(&mut probe) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Some(s),
                _ => continue,
            }
        }
        None
    }

    /// `PING` on a fresh connection: readiness of clamd itself.
    pub async fn ping(&self) -> Result<(), ScanError> {
        let mut stream = self.io(TcpStream::connect(&self.addr)).await?;
        self.io(stream.write_all(b"zPING\0")).await?;
        let mut buf = Vec::new();
        self.io(stream.read_to_end(&mut buf)).await?;
        if buf.starts_with(b"PONG") {
            Ok(())
        } else {
            Err(ScanError::Protocol(String::from_utf8_lossy(&buf).into()))
        }
    }

    /// Starts a scan: waits for a free slot, then opens INSTREAM on a pooled or new session.
    pub async fn start(&self) -> Result<Scan<'_>, ScanError> {
        let permit = tokio::time::timeout(self.timeout, self.slots.clone().acquire_owned())
            .await
            .map_err(|_| ScanError::Timeout)?
            .expect("semaphore never closed");
        // A pooled session may have died since its last use: one retry on a fresh connection is
        // safe because no file data has been sent yet.
        if let Some(mut s) = self.take_idle() {
            if self.io(s.stream.write_all(b"zINSTREAM\0")).await.is_ok() {
                return Ok(Scan::new(self, s, permit));
            }
        }
        let mut s = self.connect().await?;
        self.io(s.stream.write_all(b"zINSTREAM\0")).await?;
        Ok(Scan::new(self, s, permit))
    }

    /// Scans a complete in-memory body.
    pub async fn scan_bytes(&self, data: &[u8]) -> Result<Verdict, ScanError> {
        let mut scan = self.start().await?;
        scan.send(data).await?;
        scan.finish().await
    }
}

/// One INSTREAM in progress.
pub struct Scan<'a> {
    clamd: &'a Clamd,
    session: Session,
    _permit: OwnedSemaphorePermit,
    frame: Vec<u8>,
}

impl<'a> Scan<'a> {
    fn new(clamd: &'a Clamd, session: Session, permit: OwnedSemaphorePermit) -> Self {
        Scan {
            clamd,
            session,
            _permit: permit,
            frame: Vec::with_capacity(CHUNK + 4),
        }
    }

    /// Sends bytes as INSTREAM frames of at most [`CHUNK`] bytes.
    pub async fn send(&mut self, data: &[u8]) -> Result<(), ScanError> {
        for piece in data.chunks(CHUNK) {
            self.frame.clear();
            self.frame
                .extend_from_slice(&(piece.len() as u32).to_be_bytes());
            self.frame.extend_from_slice(piece);
            let frame = std::mem::take(&mut self.frame);
            let r = self.clamd.io(self.session.stream.write_all(&frame)).await;
            self.frame = frame;
            if let Err(e) = r {
                // clamd closes the stream when its StreamMaxLength is exceeded; its reply says so.
                if let Ok(reply) = self.read_reply().await {
                    if reply.contains("size limit exceeded") {
                        return Err(ScanError::Protocol(reply));
                    }
                }
                return Err(e);
            }
        }
        Ok(())
    }

    async fn read_reply(&mut self) -> Result<String, ScanError> {
        let mut reply = Vec::new();
        let mut byte = [0u8; 256];
        loop {
            let n = self.clamd.io(self.session.stream.read(&mut byte)).await?;
            if n == 0 {
                if reply.is_empty() {
                    return Err(ScanError::Unavailable("clamd closed the connection".into()));
                }
                break;
            }
            reply.extend_from_slice(&byte[..n]);
            if reply.contains(&0) {
                break;
            }
        }
        let end = reply.iter().position(|b| *b == 0).unwrap_or(reply.len());
        Ok(String::from_utf8_lossy(&reply[..end]).into_owned())
    }

    /// Ends the stream and reads the verdict; a healthy session goes back to the pool.
    pub async fn finish(mut self) -> Result<Verdict, ScanError> {
        self.clamd
            .io(self.session.stream.write_all(&[0, 0, 0, 0]))
            .await?;
        let reply = self.read_reply().await?;
        let id = self.session.next_id;
        let body = match reply.split_once(": ") {
            Some((tag, rest)) if tag == id.to_string() => rest.to_string(),
            _ => {
                return Err(ScanError::Protocol(format!(
                    "unexpected reply `{reply}` to request {id}"
                )))
            }
        };
        let verdict = parse_reply(&body)?;
        self.session.next_id += 1;
        self.session.last_used = Instant::now();
        let mut idle = self.clamd.idle.lock().expect("pool lock");
        idle.push(self.session);
        Ok(verdict)
    }
}

/// `stream: OK`, `stream: <name> FOUND`, or an error line.
pub fn parse_reply(body: &str) -> Result<Verdict, ScanError> {
    let body = body.trim_end();
    if body == "stream: OK" {
        return Ok(Verdict::Clean);
    }
    if let Some(name) = body
        .strip_prefix("stream: ")
        .and_then(|r| r.strip_suffix(" FOUND"))
    {
        return Ok(Verdict::Infected(name.to_string()));
    }
    Err(ScanError::Protocol(body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies() {
        assert_eq!(parse_reply("stream: OK"), Ok(Verdict::Clean));
        assert_eq!(
            parse_reply("stream: Eicar-Body-Test.UNOFFICIAL FOUND"),
            Ok(Verdict::Infected("Eicar-Body-Test.UNOFFICIAL".into()))
        );
        assert!(matches!(
            parse_reply("INSTREAM size limit exceeded. ERROR"),
            Err(ScanError::Protocol(_))
        ));
    }
}
